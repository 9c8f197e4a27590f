//! The OpenSSL calls the `openssl` crate does not wrap. This is the only `unsafe` code
//! in phasegate.

use std::os::raw::{c_char, c_int, c_void};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::SslContextBuilder;
use openssl::x509::store::X509StoreBuilderRef;
use openssl::x509::{X509CrlRef, X509StoreContextRef};

extern "C" {
    fn X509_STORE_add_crl(store: *mut openssl_sys::X509_STORE, crl: *mut openssl_sys::X509_CRL) -> c_int;
    fn SSL_CTX_set_cert_verify_callback(
        ctx: *mut openssl_sys::SSL_CTX,
        cb: Option<unsafe extern "C" fn(*mut openssl_sys::X509_STORE_CTX, *mut c_void) -> c_int>,
        arg: *mut c_void,
    );
    fn CRYPTO_set_mem_functions(
        malloc: Option<unsafe extern "C" fn(usize, *const c_char, c_int) -> *mut c_void>,
        realloc: Option<unsafe extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void>,
        free: Option<unsafe extern "C" fn(*mut c_void, *const c_char, c_int)>,
    ) -> c_int;
}

unsafe extern "C" fn mi_crypto_malloc(size: usize, _file: *const c_char, _line: c_int) -> *mut c_void {
    // SAFETY: plain allocation; OpenSSL frees it through `mi_crypto_free`.
    unsafe { libmimalloc_sys::mi_malloc(size) }
}

unsafe extern "C" fn mi_crypto_realloc(
    ptr: *mut c_void,
    size: usize,
    _file: *const c_char,
    _line: c_int,
) -> *mut c_void {
    // SAFETY: `ptr` is null or came from `mi_crypto_malloc`/`mi_crypto_realloc`.
    unsafe { libmimalloc_sys::mi_realloc(ptr, size) }
}

unsafe extern "C" fn mi_crypto_free(ptr: *mut c_void, _file: *const c_char, _line: c_int) {
    // SAFETY: `ptr` is null or came from `mi_crypto_malloc`/`mi_crypto_realloc`.
    unsafe { libmimalloc_sys::mi_free(ptr) }
}

/// Sends OpenSSL's own allocations to mimalloc, like the Rust side's: glibc malloc and free
/// were ~7% of a handshake's CPU. OpenSSL only allows this before its first allocation, so
/// it is the first thing `main` does; returns false (and changes nothing) if it was too late.
pub fn openssl_allocates_with_mimalloc() -> bool {
    // SAFETY: the three functions match OpenSSL's signatures and form one allocator; OpenSSL
    // refuses the switch once it has allocated anything, so no block crosses allocators.
    unsafe { CRYPTO_set_mem_functions(Some(mi_crypto_malloc), Some(mi_crypto_realloc), Some(mi_crypto_free)) == 1 }
}

/// Adds a CRL to a store being built (the store takes its own reference).
pub fn store_add_crl(store: &mut X509StoreBuilderRef, crl: &X509CrlRef) -> Result<(), ErrorStack> {
    // SAFETY: both pointers are valid for the duration of the call; OpenSSL up-refs the CRL.
    let rc = unsafe { X509_STORE_add_crl(store.as_ptr(), crl.as_ptr()) };
    if rc == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

extern "C" {
    fn X509_STORE_CTX_get0_untrusted(ctx: *const openssl_sys::X509_STORE_CTX) -> *mut openssl_sys::OPENSSL_STACK;
    fn X509_STORE_CTX_get0_cert(ctx: *const openssl_sys::X509_STORE_CTX) -> *mut openssl_sys::X509;
    fn OPENSSL_sk_set(stack: *mut openssl_sys::OPENSSL_STACK, i: c_int, data: *const c_void) -> *mut c_void;
}

unsafe extern "C" fn accept_chain_unverified(ctx: *mut openssl_sys::X509_STORE_CTX, _arg: *mut c_void) -> c_int {
    // a panic must not unwind into OpenSSL; the chain then stays as parsed
    // SAFETY: OpenSSL passes the context of the handshake's chain, see below.
    let _ = std::panic::catch_unwind(|| unsafe { share_presented_certificates(ctx) });
    1
}

/// Puts objects shared between connections (`peer::shared_copy`) in place of the ones
/// OpenSSL just parsed from this handshake's Certificate message, so that the session keeps
/// a reference instead of a copy of every certificate.
///
/// # Safety
/// `ctx` is the context OpenSSL's server handshake passes to the certificate verify
/// callback: its untrusted stack is the presented chain, leaf first, which the session takes
/// over once the callback returns (OpenSSL 3 `tls_process_client_certificate`), and its
/// certificate is that leaf.
unsafe fn share_presented_certificates(ctx: *mut openssl_sys::X509_STORE_CTX) {
    // SAFETY: as stated above; each swap keeps the stack owning one reference per entry.
    unsafe {
        let chain = X509_STORE_CTX_get0_untrusted(ctx);
        if chain.is_null() {
            return;
        }
        let leaf = X509_STORE_CTX_get0_cert(ctx);
        for i in 0..openssl_sys::OPENSSL_sk_num(chain) {
            let parsed = openssl_sys::OPENSSL_sk_value(chain, i) as *mut openssl_sys::X509;
            if parsed.is_null() {
                continue;
            }
            let Some(shared) = super::peer::shared_copy(openssl::x509::X509Ref::from_ptr(parsed)) else {
                continue;
            };
            // the stack takes over the shared object's reference; the parsed copy goes
            let shared = std::mem::ManuallyDrop::new(shared).as_ptr();
            OPENSSL_sk_set(chain, i, shared as *const c_void);
            if parsed == leaf {
                openssl_sys::X509_STORE_CTX_set_cert(ctx, shared);
            }
            openssl_sys::X509_free(parsed);
        }
    }
}

/// Makes the handshake accept any client chain without verifying it. phasegate verifies
/// the chain itself, per route trust bundle, after the handshake; letting OpenSSL verify
/// it too would double the cost and could fail the handshake, which audit mode must never do.
/// The chain's certificates become objects shared with other connections.
pub fn defer_client_chain_verification(ctx: &mut SslContextBuilder) {
    // SAFETY: the context pointer is valid; the callback is a plain function with no state.
    unsafe { SSL_CTX_set_cert_verify_callback(ctx.as_ptr(), Some(accept_chain_unverified), std::ptr::null_mut()) }
}

/// `SSL_CTRL_SET_MAX_CERT_LIST`: the largest certificate chain a peer may send, in bytes.
const SSL_CTRL_SET_MAX_CERT_LIST: c_int = 51;

/// Caps the size of the certificate chain a client may send; a larger one fails the
/// handshake before anything is parsed or verified.
pub fn set_max_client_chain_bytes(ctx: &mut SslContextBuilder, bytes: usize) {
    // SAFETY: the context pointer is valid; this control takes a plain integer.
    unsafe {
        openssl_sys::SSL_CTX_ctrl(
            ctx.as_ptr(),
            SSL_CTRL_SET_MAX_CERT_LIST,
            bytes as _,
            std::ptr::null_mut(),
        );
    }
}

/// Decides, for one verification error, whether verification may go on past it.
pub type ErrorHook<'a> = dyn FnMut(c_int, u32) -> bool + 'a;

/// `CRYPTO_EX_INDEX_X509_STORE_CTX` in OpenSSL 3.
const CRYPTO_EX_INDEX_X509_STORE_CTX: c_int = 5;

/// The context slot that points at the error hook of the verification in progress.
fn hook_index() -> Result<c_int, ErrorStack> {
    static INDEX: std::sync::OnceLock<c_int> = std::sync::OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(*index);
    }
    // SAFETY: no constructor, duplicator or destructor: the slot holds a borrowed pointer.
    let index = unsafe {
        openssl_sys::CRYPTO_get_ex_new_index(
            CRYPTO_EX_INDEX_X509_STORE_CTX,
            0,
            std::ptr::null_mut(),
            None,
            None,
            None,
        )
    };
    if index < 0 {
        return Err(ErrorStack::get());
    }
    Ok(*INDEX.get_or_init(|| index))
}

unsafe extern "C" fn call_error_hook(ok: c_int, ctx: *mut openssl_sys::X509_STORE_CTX) -> c_int {
    if ok == 1 {
        return 1;
    }
    let Ok(index) = hook_index() else { return 0 };
    // SAFETY: OpenSSL passes the context being verified; the slot was set by
    // `verify_cert_with_hook` to a hook that outlives the call, or is null.
    unsafe {
        let hook = openssl_sys::X509_STORE_CTX_get_ex_data(ctx, index) as *mut &mut ErrorHook<'_>;
        if hook.is_null() {
            return 0;
        }
        let error = openssl_sys::X509_STORE_CTX_get_error(ctx);
        let depth = openssl_sys::X509_STORE_CTX_get_error_depth(ctx).max(0) as u32;
        // a panic must not unwind into OpenSSL; it fails the verification instead
        let go_on = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (**hook)(error, depth)));
        c_int::from(go_on.unwrap_or(false))
    }
}

extern "C" {
    fn X509_STORE_CTX_set_verify_cb(
        ctx: *mut openssl_sys::X509_STORE_CTX,
        cb: Option<unsafe extern "C" fn(c_int, *mut openssl_sys::X509_STORE_CTX) -> c_int>,
    );
    fn X509_STORE_CTX_set_purpose(ctx: *mut openssl_sys::X509_STORE_CTX, purpose: c_int) -> c_int;
    fn X509_STORE_CTX_set_ex_data(ctx: *mut openssl_sys::X509_STORE_CTX, idx: c_int, data: *mut c_void) -> c_int;
}

/// Verifies an initialized context for `purpose` (an `X509_PURPOSE_*` id, checked on every
/// certificate of the path, CAs included). Each error is put to `hook`: `true` lets
/// verification go on past it, `false` ends it with that error.
pub fn verify_cert_with_hook(
    ctx: &mut X509StoreContextRef,
    purpose: c_int,
    hook: &mut ErrorHook<'_>,
) -> Result<bool, ErrorStack> {
    let index = hook_index()?;
    let mut hook: &mut ErrorHook<'_> = hook;
    let slot = &mut hook as *mut &mut ErrorHook<'_> as *mut c_void;
    // SAFETY: the context is initialized (inside `X509StoreContextRef::init`); the slot
    // points at `hook`, which lives until the slot is cleared below, after verification.
    unsafe {
        if X509_STORE_CTX_set_purpose(ctx.as_ptr(), purpose) != 1
            || X509_STORE_CTX_set_ex_data(ctx.as_ptr(), index, slot) != 1
        {
            return Err(ErrorStack::get());
        }
        X509_STORE_CTX_set_verify_cb(ctx.as_ptr(), Some(call_error_hook));
    }
    let verified = ctx.verify_cert();
    // SAFETY: as above; clearing the slot leaves no pointer to `hook` behind.
    unsafe {
        X509_STORE_CTX_set_ex_data(ctx.as_ptr(), index, std::ptr::null_mut());
    }
    verified
}

/// OpenSSL's text for a verify error code.
pub fn verify_error_string(code: c_int) -> String {
    // SAFETY: X509_verify_cert_error_string accepts any code (unknown ones get a generic
    // text); the result is copied out before anything else can run.
    unsafe { openssl::x509::X509VerifyResult::from_raw(code) }
        .error_string()
        .to_string()
}

extern "C" {
    fn SSL_has_pending(ssl: *const openssl_sys::SSL) -> c_int;
    fn BIO_number_read(bio: *mut openssl_sys::BIO) -> u64;
}

/// Whether OpenSSL holds input not handed out yet: decrypted bytes of the current record or
/// records read ahead from the socket (`SSL_pending` counts only the former).
pub fn has_buffered_input(ssl: &openssl::ssl::SslRef) -> bool {
    // SAFETY: a valid SSL; the call only reads its record layer's state.
    unsafe { SSL_has_pending(ssl.as_ptr()) == 1 }
}

/// Bytes OpenSSL has read from the connection's socket so far (its read BIO's count).
pub fn socket_bytes_read(ssl: &openssl::ssl::SslRef) -> u64 {
    // SAFETY: a valid SSL; its read BIO, if any, lives as long as the SSL.
    unsafe {
        let bio = openssl_sys::SSL_get_rbio(ssl.as_ptr());
        if bio.is_null() {
            0
        } else {
            BIO_number_read(bio)
        }
    }
}
