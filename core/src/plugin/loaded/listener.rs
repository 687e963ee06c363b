//! [`LoadedListener`]: a listener of a loaded provider, behind [`Listener`].

use std::net::SocketAddr;
use std::time::Instant;

use super::{Handle, LoadedProvider, LoadedQp, call, same_provider};
use crate::cm::{ConnParams, ConnectRequest, Listener};
use crate::error::{Error, ErrorKind, Result};
use crate::plugin::abi;
use crate::plugin::convert;

/// A listener of a loaded provider.
pub struct LoadedListener {
    pub(super) handle: Handle<abi::RawListener>,
    pub(super) local: SocketAddr,
}

impl Listener<LoadedProvider> for LoadedListener {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn next_request(&self, deadline: Instant) -> Result<ConnectRequest> {
        // Zeroed, not uninitialised: a plugin that reports success without writing it must
        // give a wrong value at worst, never undefined behaviour.
        let mut out = std::mem::MaybeUninit::<abi::ConnectRequest>::zeroed();
        call!(
            self.handle.f(),
            listener_next_request(
                self.handle.ptr(),
                convert::timeout_ns(deadline),
                out.as_mut_ptr()
            )
        )?;
        // SAFETY: all-zero bytes are a valid `abi::ConnectRequest` (integers and byte arrays
        // only), and the plugin may only have written a request over them.
        convert::connect_request_from(unsafe { out.assume_init_ref() }, ErrorKind::Other).map_err(
            |e| {
                self.handle
                    .shared
                    .check("listener_next_request")
                    .refused("connect request", e)
            },
        )
    }

    fn accept(&self, request: &ConnectRequest, qp: &LoadedQp, params: &ConnParams) -> Result<()> {
        same_provider(&self.handle.shared, qp.handle(), "QP")?;
        let request = convert::connect_request(request)
            .map_err(|e| Error::invalid_argument(e.message().to_string()))?;
        let params = convert::conn_params(params);
        call!(
            self.handle.f(),
            listener_accept(self.handle.ptr(), &request, qp.handle().ptr(), &params)
        )
    }

    fn reject(&self, request: &ConnectRequest, private_data: &[u8]) -> Result<()> {
        let request = convert::connect_request(request)
            .map_err(|e| Error::invalid_argument(e.message().to_string()))?;
        call!(
            self.handle.f(),
            listener_reject(self.handle.ptr(), &request, convert::bytes(private_data))
        )
    }
}

impl std::fmt::Debug for LoadedListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}
