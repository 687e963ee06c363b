//! The restorer: a process outside this one that puts a device taken away by a fault back on
//! its own netdev when its taker cannot (it crashed, was killed, or gave the delete up), and the
//! marker files through which a fresh provider knows that a device is being put back.

use std::time::{Duration, Instant};

/// The script of the process that puts a device back on its own netdev if the process that took
/// it away ends first (a crash, a kill, an exit before the delete completed), or asks it to: it
/// waits on a pipe from that process; `done` means that process let go of the injection alive
/// (the device is home, or where it wants it), `home` asks for the move (`home PID`: once the
/// process PID, the one deleting the device, has ended), end of file means the
/// process ended without saying. Then, for a minute at most, it puts the device home as soon as the
/// kernel lets it — deleting it where it is elsewhere, adding it once it is gone (a delete
/// completes once the objects of the device are released). Arguments: name, link type, netdev,
/// the `rdma` tool, the marker file to remove when done.
pub(super) const RESTORER: &str = r#"
read -r word deleter
if [ "$word" != done ]; then
  # A delete still under way in the process `deleter` (it may not even have been sent yet):
  # the device is not where it is listed, and the minute starts once the delete is over.
  while [ -n "$deleter" ] && state=$(cat "/proc/$deleter/stat" 2>/dev/null); do
    case "${state##*") "}" in Z*|X*) break ;; esac
    sleep 0.1
  done
  i=0
  while [ $i -lt 600 ]; do
    where=$("$4" link show "$1/1" 2>/dev/null)
    case "$where" in
      *"netdev $3 "*|*"netdev $3") break ;;
      "") "$4" link add "$1" type "$2" netdev "$3" >/dev/null 2>&1 && break ;;
      *) "$4" link delete "$1" >/dev/null 2>&1 ;;
    esac
    sleep 0.1
    i=$((i+1))
  done
fi
rm -f "$5"
"#;

/// The marker file that says a device of this name is away because of a fault and will be put
/// back (by its injector or by a restorer); it holds the injector's owner.
fn restore_marker(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("anyverbs-restoring-{name}"))
}

/// The owners of live injectors in this process ([`register_owner`]).
static LIVE_OWNERS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records `owner` as a live injector of this process: a device it took away is away on
/// purpose, and nobody waits for it ([`wait_for_restore`]) until [`unregister_owner`].
pub fn register_owner(owner: &str) {
    LIVE_OWNERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(owner.to_owned());
}

/// `owner` is gone: a device it left away is being put back, and is waited for.
pub fn unregister_owner(owner: &str) {
    LIVE_OWNERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|o| o != owner);
}

/// Whether the process `pid` is running (not gone, not a zombie).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses and may hold any byte.
            let after = stat.rsplit_once(')')?.1;
            after
                .split_whitespace()
                .next()
                .map(|s| !matches!(s, "Z" | "X"))
        })
        .unwrap_or(false)
}

/// Whether the injector `holder` of a marker is still at work: a live injector of this
/// process, or any injector of another running process (its fault is on purpose). A holder of
/// this process that is no longer registered, or of a process that ended, left the device to
/// be put back.
fn holder_at_work(holder: &str) -> bool {
    let pid = holder.split(':').next().and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) if pid == std::process::id() => {
            !holder.contains(':')
                || LIVE_OWNERS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .any(|o| o == holder)
        }
        Some(pid) => process_alive(pid),
        None => false,
    }
}

/// Waits, until `deadline` at most, while the device called `name` is away because of a fault
/// whose injector is gone — an earlier test's provider, a process that ended — and is being put
/// back. A device taken away on purpose by an injector still at work (this caller, another
/// live provider, another running process) is not waited for.
pub fn wait_for_restore(name: &str, owner: &str, deadline: Instant) {
    let marker = restore_marker(name);
    while let Ok(holder) = std::fs::read_to_string(&marker) {
        if holder == owner || holder_at_work(&holder) || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`wait_for_restore`] for every device being put back.
pub fn wait_for_restores(owner: &str, deadline: Instant) {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in dir.flatten() {
        if let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("anyverbs-restoring-"))
        {
            wait_for_restore(name, owner, deadline);
        }
    }
}

/// The restorer of one injection: a process outside this one (see [`RESTORER`]), told through
/// a pipe when the device is back. Without the `rdma` tool there is none, and a device whose
/// taker dies before putting it back stays away.
pub(super) struct Restorer {
    pipe: Option<std::fs::File>,
    /// Removed when the restorer is dropped, unless the restorer process removes it itself.
    marker: Option<std::path::PathBuf>,
}

impl Restorer {
    pub(super) fn spawn(name: &str, link_type: &str, netdev: &str, owner: &str) -> Restorer {
        let marker = restore_marker(name);
        let _ = std::fs::write(&marker, owner);
        let pipe = Self::start(name, link_type, netdev, &marker)
            .map_err(|e| tracing::warn!(%e, "no restorer process: a crash would leave {name} away"))
            .ok();
        Restorer {
            pipe,
            marker: Some(marker),
        }
    }

    fn start(
        name: &str,
        link_type: &str,
        netdev: &str,
        marker: &std::path::Path,
    ) -> std::io::Result<std::fs::File> {
        use std::os::unix::process::CommandExt;
        let rdma = ["/usr/bin/rdma", "/sbin/rdma", "/usr/sbin/rdma", "/bin/rdma"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no rdma tool"))?;
        let (read, write) = std::io::pipe()?;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(RESTORER)
            .arg("anyverbs-restore")
            .args([name, link_type, netdev, rdma])
            .arg(marker)
            .stdin(read)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: runs in the child between fork and exec, calling only async-signal-safe
        // system calls: a session of its own (a signal to this process's group does not reach
        // it) and no inherited descriptor beyond stdio (an inherited verbs or CM descriptor
        // would keep the very device it waits for from being deleted).
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // Reaped by nobody on purpose: it outlives this process if it must. A zombie is left
        // only until this process exits.
        drop(child);
        Ok(std::fs::File::from(std::os::fd::OwnedFd::from(write)))
    }

    /// The device is back, or left where this process wants it: the restorer ends without
    /// touching anything.
    pub(super) fn done(self) {
        drop(self);
    }

    /// The restorer moves the device home now (and removes the marker once it is there).
    pub(super) fn send_home(self) {
        self.send_home_after(None);
    }

    /// The restorer moves the device home once the process `deleter` (deleting it) has ended,
    /// now without one.
    pub(super) fn send_home_after(mut self, deleter: Option<u32>) {
        if let Some(mut pipe) = self.pipe.take() {
            use std::io::Write;
            let word = match deleter {
                Some(pid) => format!("home {pid}\n"),
                None => "home\n".to_owned(),
            };
            if pipe.write_all(word.as_bytes()).is_ok() {
                // The marker stays until the restorer process removes it: a fresh provider
                // waits for the move.
                self.marker = None;
            }
        }
        // Without a restorer process nothing will move it: the drop removes the marker, so
        // nobody waits for a move that will not come.
    }
}

/// Dropped in a live process, the restorer is told it is done: only the end of the process
/// without it (a crash, a kill) leaves the device to the restorer process.
impl Drop for Restorer {
    fn drop(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            use std::io::Write;
            let _ = pipe.write_all(b"done\n");
        }
        if let Some(marker) = self.marker.take() {
            let _ = std::fs::remove_file(marker);
        }
    }
}
