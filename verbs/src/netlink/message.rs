//! Encoding requests and parsing replies of the RDMA netlink interface: pure functions over
//! bytes, tested on malformed input.

use super::*;

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// The value of a request attribute.
#[derive(Debug, Clone)]
pub(super) enum AttrValue {
    /// `NLA_U32`, host order.
    U32(u32),
    /// `NLA_NUL_STRING`: the bytes and a terminating NUL.
    Str(String),
}

/// The netlink message type of an NLDEV operation: `RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, op)`.
pub(super) const fn nldev_type(op: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) + op
}

pub(super) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Encodes one request: `nlmsghdr` (with `NLM_F_REQUEST` added to `flags`), then each
/// attribute padded to 4 bytes. `nlmsg_pid` is 0: the kernel knows the sender.
pub(super) fn encode_request(op: u16, flags: u16, seq: u32, attrs: &[(u16, AttrValue)]) -> Vec<u8> {
    let mut buf = vec![0u8; NLMSG_HDRLEN];
    for (ty, value) in attrs {
        let payload: Vec<u8> = match value {
            AttrValue::U32(v) => v.to_ne_bytes().to_vec(),
            AttrValue::Str(s) => s.bytes().chain([0]).collect(),
        };
        // Attribute payloads here are at most a 64-byte name: the u16 length cannot overflow.
        let nla_len = (NLA_HDRLEN + payload.len()) as u16;
        buf.extend_from_slice(&nla_len.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&payload);
        buf.resize(align4(buf.len()), 0);
    }
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf[4..6].copy_from_slice(&nldev_type(op).to_ne_bytes());
    buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf[12..16].copy_from_slice(&0u32.to_ne_bytes());
    buf
}

// ---------------------------------------------------------------------------------------
// Parsing (pure, over byte slices)
// ---------------------------------------------------------------------------------------

pub(super) fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

pub(super) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

pub(super) fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    read_u32(buf, at).map(|v| v as i32)
}

/// One netlink message of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NlMsg<'a> {
    pub(super) ty: u16,
    pub(super) seq: u32,
    pub(super) payload: &'a [u8],
}

/// Splits a datagram into its netlink messages, checking every length.
pub(super) fn split_messages(buf: &[u8]) -> io::Result<Vec<NlMsg<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(malformed(&format!(
                "{} trailing bytes, less than a message header",
                rest.len()
            )));
        }
        let len = read_u32(rest, 0).ok_or_else(|| malformed("message header"))? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(malformed(&format!(
                "message length {len} with {} bytes left",
                rest.len()
            )));
        }
        out.push(NlMsg {
            ty: read_u16(rest, 4).ok_or_else(|| malformed("message type"))?,
            seq: read_u32(rest, 8).ok_or_else(|| malformed("message sequence"))?,
            payload: &rest[NLMSG_HDRLEN..len],
        });
        // The last message may lack its padding.
        at = at.saturating_add(align4(len)).min(buf.len());
    }
    Ok(out)
}

/// Handles one received datagram of the reply to request `seq` of operation `op`.
///
/// Messages with another sequence number (stale replies) are skipped, as are `NLMSG_NOOP`
/// and unexpected types; each data message's payload goes to `on_data`. Returns `Ok(true)`
/// when the reply is complete (`NLMSG_DONE`, or an `NLMSG_ERROR` ack with errno 0), and
/// maps a negative errno in `NLMSG_ERROR` or `NLMSG_DONE` to [`io::Error::from_raw_os_error`].
pub(super) fn process_reply(
    buf: &[u8],
    seq: u32,
    op: u16,
    on_data: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<bool> {
    for msg in split_messages(buf)? {
        if msg.seq != seq {
            continue;
        }
        match msg.ty {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                let errno = read_i32(msg.payload, 0)
                    .ok_or_else(|| malformed("NLMSG_ERROR without errno"))?;
                return match errno {
                    0 => Ok(true),
                    e if e < 0 => Err(io::Error::from_raw_os_error(
                        e.checked_neg()
                            .ok_or_else(|| malformed("errno out of range"))?,
                    )),
                    e => Err(malformed(&format!("positive errno {e} in NLMSG_ERROR"))),
                };
            }
            NLMSG_DONE => {
                // The kernel puts the dump's status (0 or a negative errno) in the payload.
                if let Some(e) = read_i32(msg.payload, 0)
                    && e < 0
                {
                    return Err(io::Error::from_raw_os_error(
                        e.checked_neg()
                            .ok_or_else(|| malformed("errno out of range"))?,
                    ));
                }
                return Ok(true);
            }
            NLMSG_OVERRUN => return Err(io::Error::other("RDMA netlink reply overrun")),
            ty if ty == nldev_type(op) => on_data(msg.payload)?,
            _ => {}
        }
    }
    Ok(false)
}

/// One attribute: its type (flag bits masked off), whether it is in network byte order, and
/// its payload without padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Attr<'a> {
    pub(super) ty: u16,
    pub(super) net_order: bool,
    pub(super) payload: &'a [u8],
}

/// Splits a message payload into its attributes, checking every length.
pub(super) fn parse_attrs(buf: &[u8]) -> io::Result<Vec<Attr<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < NLA_HDRLEN {
            return Err(malformed(&format!(
                "{} trailing bytes, less than an attribute header",
                rest.len()
            )));
        }
        let len = read_u16(rest, 0).ok_or_else(|| malformed("attribute header"))? as usize;
        let raw_ty = read_u16(rest, 2).ok_or_else(|| malformed("attribute header"))?;
        if len < NLA_HDRLEN || len > rest.len() {
            return Err(malformed(&format!(
                "attribute {raw_ty:#x} length {len} with {} bytes left",
                rest.len()
            )));
        }
        out.push(Attr {
            ty: raw_ty & !(NLA_F_NESTED | NLA_F_NET_BYTEORDER),
            net_order: raw_ty & NLA_F_NET_BYTEORDER != 0,
            payload: &rest[NLA_HDRLEN..len],
        });
        at = at.saturating_add(align4(len)).min(buf.len());
    }
    Ok(out)
}

pub(super) fn attr_array<const N: usize>(attr: &Attr<'_>, what: &str) -> io::Result<[u8; N]> {
    attr.payload.try_into().map_err(|_| {
        malformed(&format!(
            "{what} attribute {} has {} bytes, not {N}",
            attr.ty,
            attr.payload.len()
        ))
    })
}

pub(super) fn attr_u8(attr: &Attr<'_>) -> io::Result<u8> {
    Ok(attr_array::<1>(attr, "u8")?[0])
}

pub(super) fn attr_u32(attr: &Attr<'_>) -> io::Result<u32> {
    let bytes = attr_array::<4>(attr, "u32")?;
    Ok(if attr.net_order {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_ne_bytes(bytes)
    })
}

pub(super) fn attr_u64(attr: &Attr<'_>) -> io::Result<u64> {
    let bytes = attr_array::<8>(attr, "u64")?;
    Ok(if attr.net_order {
        u64::from_be_bytes(bytes)
    } else {
        u64::from_ne_bytes(bytes)
    })
}

/// A string attribute: the bytes up to the first NUL (or all of them), as UTF-8.
pub(super) fn attr_string(attr: &Attr<'_>) -> io::Result<String> {
    let bytes = attr.payload.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8(bytes.to_vec())
        .map_err(|_| malformed(&format!("string attribute {} is not UTF-8", attr.ty)))
}

/// Parses the payload of one `RDMA_NLDEV_CMD_GET` reply message. `DEV_INDEX` and `DEV_NAME`
/// are required; unknown and nested attributes are skipped. `ports` is left empty.
pub(super) fn parse_device(payload: &[u8]) -> io::Result<RdmaDevice> {
    let mut index = None;
    let mut name = None;
    let mut node_guid = 0;
    let mut sys_image_guid = 0;
    let mut protocol = None;
    for attr in parse_attrs(payload)? {
        match attr.ty {
            ATTR_DEV_INDEX => index = Some(attr_u32(&attr)?),
            ATTR_DEV_NAME => name = Some(attr_string(&attr)?),
            ATTR_NODE_GUID => node_guid = attr_u64(&attr)?,
            ATTR_SYS_IMAGE_GUID => sys_image_guid = attr_u64(&attr)?,
            ATTR_DEV_PROTOCOL => protocol = Some(attr_string(&attr)?),
            // PAD (0) before 64-bit values, nested tables (DRIVER) and anything newer.
            _ => {}
        }
    }
    Ok(RdmaDevice {
        index: index.ok_or_else(|| malformed("device without DEV_INDEX"))?,
        name: name.ok_or_else(|| malformed("device without DEV_NAME"))?,
        node_guid,
        sys_image_guid,
        protocol,
        ports: Vec::new(),
    })
}

/// Parses the payload of one `RDMA_NLDEV_CMD_PORT_GET` reply message: the device index (if
/// sent) and the port. `PORT_INDEX` is required.
pub(super) fn parse_port(payload: &[u8]) -> io::Result<(Option<u32>, RdmaPort)> {
    let mut dev_index = None;
    let mut port = None;
    let mut netdev = None;
    let mut netdev_index = None;
    let mut state = None;
    let mut phys_state = None;
    for attr in parse_attrs(payload)? {
        match attr.ty {
            ATTR_DEV_INDEX => dev_index = Some(attr_u32(&attr)?),
            ATTR_PORT_INDEX => port = Some(attr_u32(&attr)?),
            ATTR_NDEV_NAME => netdev = Some(attr_string(&attr)?),
            ATTR_NDEV_INDEX => netdev_index = Some(attr_u32(&attr)?),
            ATTR_PORT_STATE => state = Some(attr_u8(&attr)?),
            ATTR_PORT_PHYS_STATE => phys_state = Some(attr_u8(&attr)?),
            _ => {}
        }
    }
    let port = port.ok_or_else(|| malformed("port without PORT_INDEX"))?;
    Ok((
        dev_index,
        RdmaPort {
            port,
            netdev,
            netdev_index,
            state,
            phys_state,
        },
    ))
}
