//! The echo service under the recovery supervisor over a real device, through `N` delete and
//! re-add cycles of that device, then one re-add on another netdev:
//!
//! ```sh
//! echo_cycles [CYCLES] [DEVICE]      # default: 100 rxe0; as root, in the test bed
//! ```
//!
//! The echo server and client both run on `DEVICE`, each under its own supervisor. Each cycle
//! deletes the device (`rdma link delete`, through the provider's fault injection): both
//! services must drop everything, which is what lets the kernel's delete complete; the device is
//! then added back on its own netdev — the same device by identity, under a new index — and both
//! must restart and echo again. At the end the device is added back under the same name on its
//! spare netdev (`ANYVERBS_SPARE_NETDEVS`): a different device, which neither supervisor may
//! restart on; then it goes home, and they restart. Exits 0 only if every message was echoed
//! exactly once and in order; prints the time of each recovery and their median.
//! `ANYVERBS_ECHO_VERBOSE=1` prints every decision of both supervisors as it is read.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyverbs::supervisor::{SupervisorConfig, SupervisorEvent, SystemClock};
use anyverbs::{Error, ErrorKind, Fault, Provider};
use anyverbs_examples::echo::ClientConfig;
use anyverbs_examples::harness::{Disruption, EchoPair, PairConfig, Role};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let cycles = match args.next().map(|a| a.parse::<u32>()) {
        None => 100,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("usage: echo_cycles [CYCLES] [DEVICE]");
            return ExitCode::from(2);
        }
    };
    let device = args.next().unwrap_or_else(|| "rxe0".into());
    match run(cycles, &device) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings for a software device under emulation: generous timeouts, quick retries.
fn config(device: &str) -> PairConfig {
    let mut client = ClientConfig::new(([0, 0, 0, 0], 0).into());
    client.echo_timeout = Duration::from_secs(5);
    client.poll_interval = Duration::from_millis(2);
    let server = anyverbs_examples::echo::ServerConfig {
        poll_interval: Duration::from_millis(2),
        ..Default::default()
    };
    PairConfig {
        server_device: device.into(),
        client_device: device.into(),
        server,
        client,
        supervisor: SupervisorConfig {
            return_window: Some(Duration::from_secs(60)),
            stop_deadline: Duration::from_secs(5),
            reconnect_delay: Duration::from_millis(20),
            max_reconnect_delay: Duration::from_millis(200),
            loss_timeout: Some(Duration::from_secs(60)),
            held_check_interval: Duration::from_millis(100),
            clock: Arc::new(SystemClock),
        },
        reset_down_for: Duration::from_millis(1),
        progress: 5,
    }
}

fn run(cycles: u32, device: &str) -> anyverbs::Result<()> {
    let t0 = Instant::now();
    let provider = Arc::new(anyverbs_provider_ib::provider());
    let before = provider
        .devices()?
        .into_iter()
        .find(|d| d.identity.name == device)
        .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no device {device}")))?;
    println!(
        "echo server and client on {device} ({}), {cycles} delete/add cycles to come",
        before.identity.node_guid
    );
    // ANYVERBS_ECHO_VERBOSE=1 prints every decision of both supervisors, for a failure's
    // diagnosis.
    let verbose = std::env::var_os("ANYVERBS_ECHO_VERBOSE").is_some();
    let observe = Box::new(
        move |role: Role, report: &anyverbs::supervisor::SupervisorReport| {
            if verbose {
                let at = report.at.saturating_duration_since(t0);
                println!("  [{:>8.3} s] {role}: {}", at.as_secs_f64(), report.event);
            }
        },
    );
    let deadline = |secs| Instant::now() + Duration::from_secs(secs);
    let mut pair = EchoPair::spawn(Arc::clone(&provider), config(device), observe, deadline(60))?;
    let mut took = Vec::new();
    for i in 0..cycles {
        let recovery = match pair.disrupt(Disruption::Replug(Role::Server), deadline(60)) {
            Ok(recovery) => recovery,
            Err(e) => {
                // What the other side decided meanwhile (printed when verbose), and what the
                // process still holds of the device: why it did not come back, if it did not.
                let _ = pair.poll_events();
                eprintln!(
                    "cycle {}: the process holds {:?} of {device}; its verbs files: {:?}",
                    i + 1,
                    provider.held_objects(device),
                    verbs_files()
                );
                eprintln!("its threads:\n{}", threads());
                return Err(e);
            }
        };
        took.push(recovery.took);
        if i % 10 == 9 || i + 1 == cycles {
            println!(
                "cycle {:>3}: recovered in {:>6.1} ms; {} messages echoed, every one once and in \
                 order",
                i + 1,
                recovery.took.as_secs_f64() * 1e3,
                recovery.summary.echoed
            );
        }
    }
    // The same name on another netdev: another device, which nobody may restart on.
    println!("{device} added back on its spare netdev: a different device under the same name");
    let (server_gen, client_gen) = (pair.generation(Role::Server), pair.generation(Role::Client));
    provider.inject(device, &Fault::Unplug)?;
    provider.inject(device, &Fault::ReplugOther)?;
    let foreign = pair.wait_for(Role::Server, "the foreign device", deadline(60), |e| {
        matches!(e, SupervisorEvent::ForeignDevice { .. })
    })?;
    println!("  server's supervisor: {}", foreign.event);
    let generations = (pair.generation(Role::Server), pair.generation(Role::Client));
    std::thread::sleep(Duration::from_secs(2));
    pair.poll_events()?;
    if (pair.generation(Role::Server), pair.generation(Role::Client)) != generations {
        return Err(Error::new(
            ErrorKind::Other,
            "a service restarted on the foreign device",
        ));
    }
    println!("  no restart on it in 2 s; {device} goes home");
    provider.inject(device, &Fault::Unplug)?;
    provider.inject(device, &Fault::Replug)?;
    pair.wait_started_after(Role::Server, server_gen, deadline(60))?;
    pair.wait_started_after(Role::Client, client_gen, deadline(60))?;
    let more = pair.log().next() + 20;
    pair.log().wait_for(more, deadline(60))?;
    let summary = pair.shutdown(deadline(30))?;
    took.sort();
    let median = took.get(took.len() / 2).copied().unwrap_or_default();
    println!(
        "{summary}; {cycles} cycles, median recovery {:.1} ms (slowest {:.1} ms), {:.1} s in all",
        median.as_secs_f64() * 1e3,
        took.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        t0.elapsed().as_secs_f64()
    );
    if !summary.is_clean() || summary.echoed < more {
        return Err(Error::new(
            ErrorKind::Other,
            format!("messages were lost, duplicated or corrupted: {summary}"),
        ));
    }
    println!("OK: every message was echoed exactly once and in order");
    Ok(())
}

/// The verbs device files the process has open (`/dev/infiniband/uverbsN`): a device's delete
/// waits for every one of them, those librdmacm opens for itself included, which the provider's
/// count of objects does not see.
fn verbs_files() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|target| target.display().to_string())
                .filter(|t| t.contains("uverbs"))
                .collect()
        })
        .unwrap_or_default()
}

/// Each thread of the process with where the kernel has it wait (`wchan`, and the top of its
/// kernel stack where readable): a device's delete blocked in the kernel shows here.
fn threads() -> String {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return String::new();
    };
    let mut out = String::new();
    for task in dir.flatten() {
        let path = task.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
        let stack: Vec<String> = read("stack").lines().take(3).map(str::to_owned).collect();
        // A thread in futex(2): the lock's address, and the mapping it lies in (a library's
        // data, or the heap), which tells whose lock it is.
        let syscall = read("syscall");
        let mut fields = syscall.split_whitespace();
        let lock = match (fields.next(), fields.next()) {
            (Some("202"), Some(addr)) => {
                let at = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap_or(0);
                format!(
                    "futex {addr} in {}; as a glibc mutex, held by thread {}",
                    mapping_of(at),
                    mutex_owner(at)
                )
            }
            _ => syscall.trim().to_owned(),
        };
        out += &format!(
            "  {} {}: {} [{lock}] {}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan").trim(),
            stack.join(" <- ")
        );
    }
    out
}

/// The line of `/proc/self/maps` whose range holds `addr`.
fn mapping_of(addr: u64) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .find(|line| {
            let range = line.split_whitespace().next().unwrap_or("");
            let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
            let lo = u64::from_str_radix(lo, 16).unwrap_or(0);
            let hi = u64::from_str_radix(hi, 16).unwrap_or(0);
            (lo..hi).contains(&addr)
        })
        .map_or_else(|| "no mapping".to_owned(), str::to_owned)
}

/// The holder's thread id of the glibc mutex at `addr` (its `__owner`, 8 bytes in), read through
/// `/proc/self/mem`; 0 when free, -1 when it cannot be read.
fn mutex_owner(addr: u64) -> i32 {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = [0u8; 4];
    let read = std::fs::File::open("/proc/self/mem").and_then(|mut mem| {
        mem.seek(SeekFrom::Start(addr + 8))?;
        mem.read_exact(&mut buf)
    });
    match read {
        Ok(()) => i32::from_ne_bytes(buf),
        Err(_) => -1,
    }
}
