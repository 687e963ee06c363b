use super::*;

/// Builds a netlink message with the given header fields and payload, padded.
fn msg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&1234u32.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize(align4(v.len()), 0);
    v
}

/// Builds one attribute, padded.
fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((NLA_HDRLEN + payload.len()) as u16).to_ne_bytes());
    v.extend_from_slice(&ty.to_ne_bytes());
    v.extend_from_slice(payload);
    v.resize(align4(v.len()), 0);
    v
}

fn s(v: &str) -> Vec<u8> {
    v.bytes().chain([0]).collect()
}

/// A device message shaped like the kernel's `fill_dev_info` output for rxe0.
fn rxe0_payload() -> Vec<u8> {
    [
        attr(ATTR_DEV_INDEX, &3u32.to_ne_bytes()),
        attr(ATTR_DEV_NAME, &s("rxe0")),
        attr(ATTR_PORT_INDEX, &1u32.to_ne_bytes()),
        attr(4, &0x1234_5678_9abc_def0u64.to_ne_bytes()), // CAP_FLAGS, unused
        attr(0, &[]),                                     // RDMA_NLDEV_ATTR_PAD
        attr(ATTR_NODE_GUID, &0x5054_00ff_fe12_3456u64.to_ne_bytes()),
        attr(ATTR_SYS_IMAGE_GUID, &0x5054_00ff_fe12_3457u64.to_ne_bytes()),
        attr(14, &[1]), // DEV_NODE_TYPE
        attr(ATTR_DEV_PROTOCOL, &s("roce")),
        // DRIVER, nested: skipped.
        attr(52 | NLA_F_NESTED, &attr(53, &attr(54, &s("x")))),
        attr(0x3fff, b"future attribute"),
    ]
    .concat()
}

fn port_payload(dev: u32, port: u32) -> Vec<u8> {
    [
        attr(ATTR_DEV_INDEX, &dev.to_ne_bytes()),
        attr(ATTR_DEV_NAME, &s("rxe0")),
        attr(ATTR_PORT_INDEX, &port.to_ne_bytes()),
        attr(ATTR_PORT_STATE, &[4]),
        attr(ATTR_PORT_PHYS_STATE, &[5]),
        attr(ATTR_NDEV_INDEX, &2u32.to_ne_bytes()),
        attr(ATTR_NDEV_NAME, &s("eth0")),
    ]
    .concat()
}

#[test]
fn uapi_numbers() {
    assert_eq!(nldev_type(CMD_GET), 0x1401);
    assert_eq!(nldev_type(CMD_NEWLINK), 0x1403);
    assert_eq!(nldev_type(CMD_DELLINK), 0x1404);
    assert_eq!(nldev_type(CMD_PORT_GET), 0x1405);
    assert_eq!(size_of::<SockaddrNl>(), 12);
    assert_eq!(libc::NETLINK_RDMA, 20);
}

#[test]
fn encode_dump_request() {
    let m = encode_request(CMD_GET, NLM_F_DUMP, 7, &[]);
    let mut want = Vec::new();
    want.extend_from_slice(&16u32.to_ne_bytes());
    want.extend_from_slice(&0x1401u16.to_ne_bytes());
    want.extend_from_slice(&0x301u16.to_ne_bytes());
    want.extend_from_slice(&7u32.to_ne_bytes());
    want.extend_from_slice(&0u32.to_ne_bytes());
    assert_eq!(m, want);
}

#[test]
fn encode_newlink_request() {
    let attrs = [
        (ATTR_DEV_NAME, AttrValue::Str("rxe0".into())),
        (ATTR_LINK_TYPE, AttrValue::Str("rxe".into())),
        (ATTR_NDEV_NAME, AttrValue::Str("enp0s3".into())),
    ];
    let m = encode_request(CMD_NEWLINK, NLM_F_ACK, 42, &attrs);
    let body = [
        attr(ATTR_DEV_NAME, b"rxe0\0"),
        attr(ATTR_LINK_TYPE, b"rxe\0"),
        attr(ATTR_NDEV_NAME, b"enp0s3\0"),
    ]
    .concat();
    let mut want = msg(0x1403, NLM_F_REQUEST | NLM_F_ACK, 42, &body);
    want[12..16].copy_from_slice(&0u32.to_ne_bytes());
    assert_eq!(m, want);
    // "rxe0\0" is 5 bytes: nla_len 9, padded to 12.
    assert_eq!(read_u16(&m, 16), Some(9));
    assert_eq!(m.len(), 16 + 12 + 8 + 12);
    assert_eq!(read_u32(&m, 0), Some(m.len() as u32));
    // The encoding parses back.
    let msgs = split_messages(&m).unwrap();
    assert_eq!(msgs.len(), 1);
    let a = parse_attrs(msgs[0].payload).unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(attr_string(&a[2]).unwrap(), "enp0s3");
}

#[test]
fn encode_dellink_request() {
    let m = encode_request(
        CMD_DELLINK,
        NLM_F_ACK,
        1,
        &[(ATTR_DEV_INDEX, AttrValue::U32(9))],
    );
    let mut want = msg(0x1404, 0x05, 1, &attr(ATTR_DEV_INDEX, &9u32.to_ne_bytes()));
    want[12..16].copy_from_slice(&0u32.to_ne_bytes());
    assert_eq!(m, want);
    assert_eq!(m.len(), 24);
}

#[test]
fn parses_device() {
    let d = parse_device(&rxe0_payload()).unwrap();
    assert_eq!(
        d,
        RdmaDevice {
            index: 3,
            name: "rxe0".into(),
            node_guid: 0x5054_00ff_fe12_3456,
            sys_image_guid: 0x5054_00ff_fe12_3457,
            protocol: Some("roce".into()),
            ports: vec![],
        }
    );
}

#[test]
fn parses_port_and_net_byteorder() {
    let (dev, p) = parse_port(&port_payload(3, 1)).unwrap();
    assert_eq!(dev, Some(3));
    assert_eq!(
        p,
        RdmaPort {
            port: 1,
            netdev: Some("eth0".into()),
            netdev_index: Some(2),
            state: Some(4),
            phys_state: Some(5),
        }
    );
    let be = attr(ATTR_PORT_INDEX | NLA_F_NET_BYTEORDER, &2u32.to_be_bytes());
    assert_eq!(parse_port(&be).unwrap().1.port, 2);
    // An IB port without netdev.
    let ib = [
        attr(ATTR_PORT_INDEX, &1u32.to_ne_bytes()),
        attr(ATTR_PORT_STATE, &[1]),
    ]
    .concat();
    let (dev, p) = parse_port(&ib).unwrap();
    assert_eq!(dev, None);
    assert_eq!((p.netdev, p.netdev_index, p.state), (None, None, Some(1)));
}

#[test]
fn multipart_dump_with_stale_and_done() {
    let ty = nldev_type(CMD_GET);
    let mut dgram = msg(ty, 0x2, 99, &rxe0_payload()); // stale: other seq
    dgram.extend(msg(ty, 0x2, 5, &rxe0_payload()));
    dgram.extend(msg(NLMSG_NOOP, 0, 5, &[]));
    dgram.extend(msg(0x1405, 0x2, 5, b"other op")); // unexpected type: skipped
    let mut got = Vec::new();
    let mut sink = |p: &[u8]| {
        got.push(parse_device(p)?);
        Ok(())
    };
    assert!(!process_reply(&dgram, 5, CMD_GET, &mut sink).unwrap());
    let done = msg(NLMSG_DONE, 0x2, 5, &0i32.to_ne_bytes());
    assert!(process_reply(&done, 5, CMD_GET, &mut sink).unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "rxe0");
    // A DONE for another request does not finish this one.
    let mut nothing = |_: &[u8]| Ok(());
    let stale_done = msg(NLMSG_DONE, 0x2, 4, &0i32.to_ne_bytes());
    assert!(!process_reply(&stale_done, 5, CMD_GET, &mut nothing).unwrap());
    // A DONE with no payload (old kernels) finishes it.
    assert!(process_reply(&msg(NLMSG_DONE, 2, 5, &[]), 5, CMD_GET, &mut nothing).unwrap());
}

#[test]
fn errors_and_acks() {
    let mut nothing = |_: &[u8]| Ok(());
    let mut err_payload = (-libc::EPERM).to_ne_bytes().to_vec();
    err_payload.extend(encode_request(CMD_NEWLINK, NLM_F_ACK, 8, &[])); // echoed request
    let e = process_reply(
        &msg(NLMSG_ERROR, 0, 8, &err_payload),
        8,
        CMD_NEWLINK,
        &mut nothing,
    )
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));

    let mut ack = 0i32.to_ne_bytes().to_vec();
    ack.extend(encode_request(CMD_NEWLINK, NLM_F_ACK, 8, &[]));
    assert!(
        process_reply(
            &msg(NLMSG_ERROR, 0x100, 8, &ack),
            8,
            CMD_NEWLINK,
            &mut nothing
        )
        .unwrap()
    );

    let done = msg(NLMSG_DONE, 2, 8, &(-libc::EOPNOTSUPP).to_ne_bytes());
    let e = process_reply(&done, 8, CMD_GET, &mut nothing).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));

    let e = process_reply(&msg(NLMSG_ERROR, 0, 8, &[0, 0]), 8, CMD_GET, &mut nothing).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let e = process_reply(
        &msg(NLMSG_ERROR, 0, 8, &5i32.to_ne_bytes()),
        8,
        CMD_GET,
        &mut nothing,
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let e = process_reply(
        &msg(NLMSG_ERROR, 0, 8, &i32::MIN.to_ne_bytes()),
        8,
        CMD_GET,
        &mut nothing,
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(process_reply(&msg(NLMSG_OVERRUN, 0, 8, &[]), 8, CMD_GET, &mut nothing).is_err());
    // An error from a stale request is ignored.
    let stale = msg(NLMSG_ERROR, 0, 7, &(-libc::EPERM).to_ne_bytes());
    assert!(!process_reply(&stale, 8, CMD_GET, &mut nothing).unwrap());
}

fn invalid(r: io::Result<impl std::fmt::Debug>) {
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
}

#[test]
fn malformed_messages() {
    invalid(split_messages(&[1, 2, 3]));
    let good = msg(NLMSG_DONE, 2, 1, &0i32.to_ne_bytes());
    let mut short_len = good.clone();
    short_len[0..4].copy_from_slice(&8u32.to_ne_bytes());
    invalid(split_messages(&short_len));
    let mut long_len = good.clone();
    long_len[0..4].copy_from_slice(&100u32.to_ne_bytes());
    invalid(split_messages(&long_len));
    let mut huge_len = good.clone();
    huge_len[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
    invalid(split_messages(&huge_len));
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0; 5]);
    invalid(split_messages(&trailing));
    assert_eq!(split_messages(&[]).unwrap(), vec![]);
    // A last message without padding is accepted.
    let mut unpadded = msg(0x1401, 2, 1, &[]);
    unpadded.extend_from_slice(&(17u32).to_ne_bytes());
    unpadded.extend_from_slice(&[0; 12]);
    unpadded.push(9);
    let msgs = split_messages(&unpadded).unwrap();
    assert_eq!(msgs[1].payload, &[9]);
}

#[test]
fn malformed_attributes() {
    invalid(parse_attrs(&[4, 0]));
    invalid(parse_attrs(&[2, 0, 1, 0])); // nla_len < 4
    invalid(parse_attrs(&[12, 0, 1, 0, 0, 0, 0, 0])); // longer than the buffer
    let mut trailing = attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes());
    trailing.extend_from_slice(&[0, 0]);
    invalid(parse_attrs(&trailing));
    // Wrong sizes for typed attributes.
    invalid(parse_device(
        &[attr(ATTR_DEV_INDEX, &[1, 0]), attr(ATTR_DEV_NAME, &s("x"))].concat(),
    ));
    invalid(parse_device(
        &[
            attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes()),
            attr(ATTR_DEV_NAME, &s("x")),
            attr(ATTR_NODE_GUID, &[0; 4]),
        ]
        .concat(),
    ));
    invalid(parse_port(
        &[
            attr(ATTR_PORT_INDEX, &1u32.to_ne_bytes()),
            attr(ATTR_PORT_STATE, &[1, 2]),
        ]
        .concat(),
    ));
    // Missing required attributes.
    invalid(parse_device(&attr(ATTR_DEV_NAME, &s("x"))));
    invalid(parse_device(&attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes())));
    invalid(parse_port(&attr(ATTR_PORT_STATE, &[1])));
    // Not UTF-8.
    invalid(parse_device(
        &[
            attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes()),
            attr(ATTR_DEV_NAME, &[0xff, 0xfe, 0]),
        ]
        .concat(),
    ));
    // A string without NUL is taken whole.
    let d = parse_device(
        &[
            attr(ATTR_DEV_INDEX, &1u32.to_ne_bytes()),
            attr(ATTR_DEV_NAME, b"siw0"),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(d.name, "siw0");
}

/// Every truncation and every single-byte corruption of a valid reply gives a result,
/// never a panic or an out-of-bounds read.
#[test]
fn truncated_and_corrupted_replies_never_panic() {
    let ty = nldev_type(CMD_GET);
    let mut dgram = msg(ty, 2, 5, &rxe0_payload());
    dgram.extend(msg(nldev_type(CMD_PORT_GET), 2, 5, &port_payload(3, 1)));
    dgram.extend(msg(NLMSG_DONE, 2, 5, &0i32.to_ne_bytes()));
    let mut sink = |p: &[u8]| {
        let _ = parse_device(p)?;
        let _ = parse_port(p);
        Ok(())
    };
    assert!(process_reply(&dgram, 5, CMD_GET, &mut sink).unwrap());
    for cut in 0..dgram.len() {
        let _ = process_reply(&dgram[..cut], 5, CMD_GET, &mut sink);
    }
    for i in 0..dgram.len() {
        for v in [0u8, 1, 3, 0x7f, 0x80, 0xff] {
            let mut bad = dgram.clone();
            bad[i] = v;
            let _ = process_reply(&bad, 5, CMD_GET, &mut sink);
            let _ = process_reply(&bad, 5, CMD_PORT_GET, &mut sink);
        }
    }
    let payload = rxe0_payload();
    for cut in 0..payload.len() {
        let _ = parse_device(&payload[..cut]);
        let _ = parse_port(&payload[..cut]);
    }
}

#[test]
fn add_link_refuses_bad_names_before_the_kernel() {
    let t = Duration::from_secs(1);
    let kind = |r: io::Result<()>| r.unwrap_err().kind();
    assert_eq!(
        kind(add_link("", "rxe", "eth0", t)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(add_link("rxe%d", "rxe", "eth0", t)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(add_link(&"r".repeat(64), "rxe", "eth0", t)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(add_link("rxe0", "rxe\0", "eth0", t)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(add_link("rxe0", "rxe", "a-very-long-ifname", t)),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(add_link("rxe0", "", "eth0", t)),
        io::ErrorKind::InvalidInput
    );
}

/// On a kernel without RDMA this is a clear error; with RDMA, a list. Never a hang.
#[test]
fn list_devices_here_returns_promptly() {
    let timeout = Duration::from_secs(2);
    let start = Instant::now();
    let r = list_devices(timeout);
    assert!(start.elapsed() < timeout + Duration::from_millis(500));
    match r {
        Ok(devices) => {
            for d in devices {
                assert!(!d.name.is_empty());
            }
        }
        Err(e) => {
            assert_ne!(e.kind(), io::ErrorKind::InvalidData, "{e}");
            assert!(!e.to_string().is_empty());
            if e.kind() == io::ErrorKind::Unsupported {
                assert!(e.to_string().contains("RDMA netlink"), "{e}");
            }
        }
    }
}

#[test]
fn delete_link_here_fails_promptly() {
    let timeout = Duration::from_secs(2);
    let start = Instant::now();
    // No device has this index; on a kernel with RDMA the kernel answers EINVAL
    // (or EPERM without CAP_NET_ADMIN).
    let r = delete_link(u32::MAX - 1, timeout);
    assert!(start.elapsed() < timeout + Duration::from_millis(500));
    assert!(r.is_err());
}

#[test]
fn bounded_times_out_without_waiting_for_the_worker() {
    let start = Instant::now();
    let r: io::Result<()> = bounded(Duration::from_millis(50), "test", |_| {
        thread::sleep(Duration::from_millis(500));
        Ok(())
    });
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    assert!(start.elapsed() < Duration::from_millis(400));
    assert!(deadline_after(Duration::MAX) > Instant::now());
}
