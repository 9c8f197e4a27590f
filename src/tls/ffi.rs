//! The two OpenSSL calls the `openssl` crate does not wrap. This is the only `unsafe` code
//! in phasegate.

use std::os::raw::{c_int, c_void};

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::SslContextBuilder;
use openssl::x509::store::X509StoreBuilderRef;
use openssl::x509::X509CrlRef;

extern "C" {
    fn X509_STORE_add_crl(store: *mut openssl_sys::X509_STORE, crl: *mut openssl_sys::X509_CRL) -> c_int;
    fn SSL_CTX_set_cert_verify_callback(
        ctx: *mut openssl_sys::SSL_CTX,
        cb: Option<unsafe extern "C" fn(*mut openssl_sys::X509_STORE_CTX, *mut c_void) -> c_int>,
        arg: *mut c_void,
    );
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
