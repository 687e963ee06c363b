//! The network interface under a RoCE or iWARP device: its IP addresses (the CM needs one to
//! bind a device) and bringing it down and up (a port flap, for fault injection).

use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use anyverbs::Error;

use crate::error::{call_failed, last_errno};

/// The IP addresses of `netdev`, IPv4 first. Empty when it has none (or does not exist).
pub fn addresses(netdev: &str) -> Result<Vec<IpAddr>, Error> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: a valid out-pointer; the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(call_failed("getifaddrs", last_errno()));
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        if unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes() != netdev.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
        unsafe {
            match (*ifa.ifa_addr).sa_family as i32 {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    v4.push(IpAddr::V4(Ipv4Addr::from(
                        sin.sin_addr.s_addr.to_ne_bytes(),
                    )));
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    v6.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
    }
    // SAFETY: the list from getifaddrs, freed once; nothing borrowed from it is kept.
    unsafe { libc::freeifaddrs(head) };
    v4.extend(v6);
    Ok(v4)
}

/// The socket address (port 0) that binds to `ip` on `netdev`: an IPv6 link-local address means
/// nothing without its interface, so it carries the netdev's index as its scope (without it
/// `rdma_bind_addr` fails with `EINVAL`). Every interface that is up has such an address, and
/// on a netdev with no other it is the only one there is to bind.
pub fn bind_address(netdev: &str, ip: IpAddr) -> Result<SocketAddr, Error> {
    match ip {
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
            let name = CString::new(netdev)
                .map_err(|_| Error::invalid_argument("a netdev name has no NUL"))?;
            // SAFETY: a NUL-terminated name, read only during the call.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                return Err(call_failed(
                    &format!("if_nametoindex({netdev})"),
                    last_errno(),
                ));
            }
            Ok(SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, index)))
        }
        ip => Ok(SocketAddr::new(ip, 0)),
    }
}

/// Brings `netdev` up or down (`SIOCSIFFLAGS`; needs `CAP_NET_ADMIN`).
pub fn set_up(netdev: &str, up: bool) -> Result<(), Error> {
    let name =
        CString::new(netdev).map_err(|_| Error::invalid_argument("a netdev name has no NUL"))?;
    if name.as_bytes().len() >= libc::IFNAMSIZ {
        return Err(Error::invalid_argument(format!(
            "netdev name {netdev:?} is too long"
        )));
    }
    // SAFETY: creating a datagram socket only to issue interface ioctls; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(call_failed("socket", last_errno()));
    }
    // SAFETY: ifreq is plain old data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: a valid socket and ifreq for SIOCGIFFLAGS, which fills the flags.
    let result = if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) } != 0 {
        Err(call_failed(
            &format!("SIOCGIFFLAGS({netdev})"),
            last_errno(),
        ))
    } else {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe {
            if up {
                req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            } else {
                req.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
            }
        }
        // SAFETY: a valid socket and ifreq for SIOCSIFFLAGS.
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) } != 0 {
            Err(call_failed(
                &format!("SIOCSIFFLAGS({netdev})"),
                last_errno(),
            ))
        } else {
            Ok(())
        }
    };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_address_and_a_missing_netdev_has_none() {
        let lo = addresses("lo").unwrap();
        assert!(lo.iter().any(|a| a.is_loopback()), "{lo:?}");
        assert!(addresses("no-such-netdev0").unwrap().is_empty());
    }

    #[test]
    fn a_link_local_address_is_bound_with_its_netdevs_scope() {
        let v4 = bind_address("lo", IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        assert_eq!(v4, SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
        let global: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            bind_address("no-such-netdev0", IpAddr::V6(global)).unwrap(),
            SocketAddr::new(IpAddr::V6(global), 0),
            "a global address needs no scope"
        );
        let link_local: Ipv6Addr = "fe80::1".parse().unwrap();
        match bind_address("lo", IpAddr::V6(link_local)).unwrap() {
            SocketAddr::V6(a) => assert!(a.scope_id() != 0, "{a}"),
            other => panic!("{other}"),
        }
        assert!(bind_address("no-such-netdev0", IpAddr::V6(link_local)).is_err());
    }

    #[test]
    fn a_missing_netdev_cannot_be_flapped() {
        let e = set_up("no-such-netdev0", true).unwrap_err();
        assert!(e.message().contains("no-such-netdev0"), "{e}");
    }
}
