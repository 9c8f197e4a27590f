//! A headless Chromium driven over WebDriver (fantoccini), for the pages people read: the
//! admin page and the refusal page. Screenshots go to target/screenshots/.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};

use super::gateway::{free_port, wait_for_port};

pub struct Driver {
    process: Child,
    browser: Option<Browser>,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Starts chromedriver and a headless Chromium session.
pub async fn browser(width: u32, height: u32) -> Driver {
    launch(width, height, &[], false).await
}

/// A phone: Chromium's mobile emulation with this viewport (a headless window is never
/// narrower than 500 px), with extra Chromium flags (host mapping, certificate handling).
pub async fn phone(width: u32, height: u32, flags: &[String]) -> Driver {
    launch(width, height, flags, true).await
}

async fn launch(width: u32, height: u32, flags: &[String], mobile: bool) -> Driver {
    let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&driver).exists() && std::path::Path::new(&chromium).exists(),
        "browser tests need Chromium and ChromeDriver: apt-get install chromium chromium-driver (or set CHROMIUM and CHROMEDRIVER)"
    );
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(format!("--window-size={width},{height}"));
    args.extend(flags.iter().cloned());
    // each attempt its own Chromium profile: one a dropped attempt left running keeps its lock
    let caps_for = |attempt: u32| -> fantoccini::wd::Capabilities {
        let mut args = args.clone();
        args.push(format!(
            "--user-data-dir={}",
            profile.path().join(format!("chromium-{attempt}")).display()
        ));
        let mut options = serde_json::json!({ "binary": chromium, "args": args });
        if mobile {
            options["mobileEmulation"] =
                serde_json::json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2.0 } });
        }
        let caps = serde_json::json!({ "browserName": "chrome", "goog:chromeOptions": options });
        caps.as_object().unwrap().clone().into_iter().collect()
    };
    let log = profile.path().join("chromedriver.log");
    // On a cold machine (CI's) a chromedriver has been seen to drop the connection of its
    // first session request while nine others start beside it: a connection that fails
    // before any answer gets a fresh chromedriver, twice at most. An answer that refuses
    // the session is not retried.
    let mut attempt = 1;
    loop {
        let (mut process, port) = start_chromedriver(&driver, &log).await;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps_for(attempt))
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(browser) => {
                return Driver {
                    process,
                    browser: Some(browser),
                    _profile: profile,
                }
            }
            Err(e) => {
                let _ = process.kill();
                let _ = process.wait();
                let dropped = matches!(
                    e,
                    fantoccini::error::NewSessionError::Lost(_) | fantoccini::error::NewSessionError::FailedC(_)
                );
                if !dropped || attempt == 3 {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    panic!(
                        "a WebDriver session (attempt {attempt}): {e:?}\nchromedriver's log, last lines first:\n{}",
                        tail.join("\n")
                    );
                }
                eprintln!("chromedriver dropped the session request ({e}); starting another");
                attempt += 1;
            }
        }
    }
}

/// A chromedriver on a port of its own, once it listens, logging to `log`.
async fn start_chromedriver(driver: &str, log: &std::path::Path) -> (Child, u16) {
    let port = free_port();
    let process = Command::new(driver)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    wait_for_port(format!("127.0.0.1:{port}").parse().unwrap()).await;
    (process, port)
}

impl Driver {
    pub fn b(&self) -> &Browser {
        self.browser.as_ref().unwrap()
    }

    /// Waits up to 10 s for an element whose text satisfies `ok`; returns the text.
    pub async fn text_of(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        for _ in 0..200 {
            if let Ok(e) = self.b().find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    if ok(&t) {
                        return t;
                    }
                    last = t;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.screenshot("failure").await;
        panic!("{css} never matched; last text: {last:?}");
    }

    pub async fn click(&self, css: &str) {
        let e = self
            .b()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        e.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        if let Ok(png) = self.b().screenshot().await {
            std::fs::write(&path, png).unwrap();
            println!("screenshot: {}", path.display());
        }
        path
    }

    pub async fn close(mut self) {
        if let Some(b) = self.browser.take() {
            let _ = b.close().await;
        }
    }
}
