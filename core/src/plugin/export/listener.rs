//! The plugin side of [`Listener`]: connection requests, accepted or rejected.

use super::*;
use crate::cm::Listener;

// Every function below is called by the loader with handles this module handed out and with
// pointers valid as the `abi` module documents; each says so once, in its SAFETY comment.

pub(super) unsafe extern "C" fn listener_free<P: Provider>(l: *mut abi::RawListener) {
    // SAFETY: the loader releases each handle once, after its last use.
    unsafe { release::<P::Listener, _>(l, tag::LISTENER) }
}

pub(super) unsafe extern "C" fn listener_next_request<P: Provider>(
    l: *const abi::RawListener,
    timeout_ns: u64,
    out: *mut abi::ConnectRequest,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let l = object::<P::Listener, _>(l, tag::LISTENER, "listener")?;
            let request = l.next_request(convert::deadline_in(timeout_ns))?;
            put(out, convert::connect_request(&request)?)
        })
    }
}

pub(super) unsafe extern "C" fn listener_accept<P: Provider>(
    l: *const abi::RawListener,
    request: *const abi::ConnectRequest,
    qp: *const abi::RawQp,
    params: *const abi::ConnParams,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handles and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let l = object::<P::Listener, _>(l, tag::LISTENER, "listener")?;
            let qp = object::<P::Qp, _>(qp, tag::QP, "QP")?;
            let request = convert::connect_request_from(
                input(request, "connection request")?,
                ErrorKind::InvalidArgument,
            )?;
            let params = convert::conn_params_from(
                input(params, "connection parameters")?,
                ErrorKind::InvalidArgument,
            )?;
            l.accept(&request, qp, &params)
        })
    }
}

pub(super) unsafe extern "C" fn listener_reject<P: Provider>(
    l: *const abi::RawListener,
    request: *const abi::ConnectRequest,
    private_data: abi::Bytes,
    err: *mut ErrorBuf,
) -> Status {
    // SAFETY: handle and pointers as the ABI documents.
    unsafe {
        guard(err, || {
            let l = object::<P::Listener, _>(l, tag::LISTENER, "listener")?;
            let request = convert::connect_request_from(
                input(request, "connection request")?,
                ErrorKind::InvalidArgument,
            )?;
            l.reject(
                &request,
                convert::private_slice(private_data, ErrorKind::InvalidArgument)?,
            )
        })
    }
}
