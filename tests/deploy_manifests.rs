//! The Kubernetes manifests hold together: probes point at the admin endpoints, the
//! container arguments are ones phasegate accepts, and the ConfigMap's policies compile.

mod common;

use std::path::Path;

fn docs(name: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/kubernetes")
            .join(name),
    )
    .unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn the_deployment_probes_the_admin_endpoints_with_arguments_phasegate_accepts() {
    let deployment = &docs("deployment.yaml")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "run");
    // clap rejects unknown flags before touching the config: a missing config dir is the
    // only complaint for arguments it accepts
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("unexpected argument") && !stderr.contains("invalid value"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot read") || stderr.contains("/etc/phasegate"),
        "{stderr}"
    );
}

#[test]
fn the_configmap_policies_compile() {
    let pki = common::TestPki::new();
    let cm = &docs("configmap.yaml")[0];
    let root = pki.dir.path().to_str().unwrap().to_string();
    std::fs::create_dir_all(pki.path("etc/tls")).unwrap();
    std::fs::copy(pki.path("certs/server.crt"), pki.path("etc/tls/tls.crt")).unwrap();
    std::fs::copy(pki.path("certs/server.key"), pki.path("etc/tls/tls.key")).unwrap();
    std::fs::create_dir_all(pki.path("etc/pki")).unwrap();
    std::fs::copy(pki.path("pki/root.pem"), pki.path("etc/pki/root.pem")).unwrap();
    std::fs::copy(pki.path("pki/intermediate.pem"), pki.path("etc/pki/intermediate.pem")).unwrap();
    for (name, text) in cm["data"].as_mapping().unwrap() {
        let text = text
            .as_str()
            .unwrap()
            .replace("/etc/phasegate/", &format!("{root}/etc/"))
            .replace("payments.payments.svc.cluster.local:8080", "127.0.0.1:8080");
        pki.write(&format!("k8s/{}", name.as_str().unwrap()), &text);
    }
    let config = phasegate::config::load(&pki.path("k8s")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(config.routes[0].name.as_ref(), "payments-api");
    assert!(config.routes[0].auto_rollback.is_some());
}

#[test]
fn the_deployment_takes_the_fleet_store_from_a_secret_and_never_inline() {
    let deployment = &docs("deployment.yaml")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let store = env
        .iter()
        .find(|e| e["name"] == "PHASEGATE_STORE")
        .expect("PHASEGATE_STORE");
    assert_eq!(store["valueFrom"]["secretKeyRef"]["name"], "phasegate-store");
    assert!(store.get("value").is_none(), "the URL is not written into the manifest");
    let password = env
        .iter()
        .find(|e| e["name"] == "PHASEGATE_STORE_PASSWORD_FILE")
        .expect("a password file");
    // the file lies in a mount of the Secret
    let file = password["value"].as_str().unwrap();
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let mount = mounts
        .iter()
        .find(|m| file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap().trim_end_matches('/'))))
        .expect("the password file is in a mounted volume");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_sequence().unwrap();
    let volume = volumes
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    assert_eq!(volume["secret"]["secretName"], "phasegate-store", "{volume:?}");
}
