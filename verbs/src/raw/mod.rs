//! The calls sideway does not wrap, or wraps in a way a provider cannot use, made directly on
//! rdma-mummy-sys — the only place in the crate with `unsafe` besides the two Linux socket
//! modules ([`netlink`](crate::netlink), [`uevent`](crate::uevent)).
//!
//! Why each is here and not in sideway:
//! - [`data_path`]: sideway's post guards drop `ibv_post_send`'s `bad_wr`, so after a failed
//!   batch nobody knows which WRs were posted — and a provider must never lose a WR. Its basic
//!   poller polls a batch into its own buffer and loses whatever the caller does not iterate.
//! - [`core_path`]: the same two calls in the core's types, building nothing but the verbs WR
//!   structs (the core's SGE is an `ibv_sge`): what the provider posts and polls with.
//! - [`async_events`]: sideway has no wrapper for `ibv_get_async_event`; and rdma-mummy-sys
//!   declares the event's type as a Rust enum, which an event type newer than the bindings
//!   would make undefined behaviour, so the event is read into a struct of our own with a plain
//!   `u32` in that place.
//! - [`cm`]: sideway's connection manager (0.4.3) has no reject, no private data, no
//!   connection parameters besides the QP number, no raw access to its IDs, panics on an
//!   event type it does not know, and keeps every device context it hands out in a
//!   process-global map that is never cleared.
//!
//! Every function here takes raw pointers that the safe wrappers own; each `unsafe` block says
//! why it is sound.

pub mod async_events;
pub mod cm;
pub mod core_path;
pub mod data_path;
pub mod query;
