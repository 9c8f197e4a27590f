//! The OpenSSL calls the `openssl` crate does not wrap. This is the only `unsafe` code
//! in phasegate.

use std::os::raw::{c_char, c_int, c_void};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::SslContextBuilder;
use openssl::x509::store::X509StoreBuilderRef;
use openssl::x509::X509CrlRef;

extern "C" {
    fn X509_STORE_set_verify_cb(
        store: *mut openssl_sys::X509_STORE,
        cb: Option<unsafe extern "C" fn(c_int, *mut openssl_sys::X509_STORE_CTX) -> c_int>,
    );
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

unsafe extern "C" fn accept_chain_unverified(_ctx: *mut openssl_sys::X509_STORE_CTX, _arg: *mut c_void) -> c_int {
    1
}

/// Makes the handshake accept any client chain without verifying it. phasegate verifies
/// the chain itself, per route trust bundle, after the handshake; letting OpenSSL verify
/// it too would double the cost and could fail the handshake, which audit mode must never do.
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

unsafe extern "C" fn tolerate_stale_crl(ok: c_int, ctx: *mut openssl_sys::X509_STORE_CTX) -> c_int {
    if ok == 1 {
        return 1;
    }
    // SAFETY: OpenSSL passes a valid context to its verify callback.
    let error = unsafe { openssl_sys::X509_STORE_CTX_get_error(ctx) };
    c_int::from(matches!(
        error,
        openssl_sys::X509_V_ERR_CRL_HAS_EXPIRED | openssl_sys::X509_V_ERR_CRL_NOT_YET_VALID
    ))
}

/// Makes a store accept CRLs that are past their nextUpdate (or not yet valid): a stale
/// CRL still revokes what it lists, but does not fail every other client (`crl_stale:
/// fail-open`). Every other verification error still fails.
pub fn tolerate_stale_crls(store: &mut X509StoreBuilderRef) {
    // SAFETY: the store pointer is valid; the callback is a plain function with no state.
    unsafe { X509_STORE_set_verify_cb(store.as_ptr(), Some(tolerate_stale_crl)) }
}
