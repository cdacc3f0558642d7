//! Figures a run reports: latency quantiles from an HDR histogram and a
//! process's resident memory (`/proc/<pid>/status`, `/proc/<pid>/statm`),
//! threads and open descriptors.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// An empty latency histogram in microseconds, 1 µs to 10 minutes, three
/// significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

/// p50 … max in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }
    }

    pub fn to_json(self) -> Value {
        json!({"p50_ms": self.p50, "p90_ms": self.p90, "p99_ms": self.p99,
               "p999_ms": self.p999, "max_ms": self.max})
    }
}

/// `VmRSS` of a process in bytes, `None` if it cannot be read (no such
/// process, not Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// Summed RSS of several processes (two server instances); `None` if any
/// cannot be read, or if the list is empty.
pub fn total_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| rss_bytes(*p)).sum()
}

/// This process's own RSS.
pub fn own_rss() -> Option<u64> {
    rss_bytes(std::process::id())
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What `chat-soak` samples of a process every second, memory in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcMemory {
    /// `VmRSS`: resident memory.
    pub rss_kib: u64,
    /// `VmHWM`: the highest `VmRSS` so far, as the kernel updates it
    /// (lazily: it can trail a `VmRSS` just read).
    pub hwm_kib: u64,
    /// `RssAnon`: the resident anonymous part (the heap, stacks).
    pub anon_kib: u64,
    /// `statm` field 1: the whole virtual size.
    pub statm_size_kib: u64,
    /// `statm` field 2: resident (the same figure as `VmRSS`).
    pub statm_resident_kib: u64,
    /// `statm` field 3: resident and file-backed (shared).
    pub statm_shared_kib: u64,
    pub threads: u64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/statm`; `None` when the
/// process is gone (or not Linux).
pub fn proc_memory(pid: u32) -> Option<ProcMemory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let (size, resident, shared) = parse_statm(&statm)?;
    let page_kib = page_size() / 1024;
    Some(ProcMemory {
        rss_kib: status_field(&status, "VmRSS:")?,
        hwm_kib: status_field(&status, "VmHWM:").unwrap_or(0),
        anon_kib: status_field(&status, "RssAnon:").unwrap_or(0),
        statm_size_kib: size * page_kib,
        statm_resident_kib: resident * page_kib,
        statm_shared_kib: shared * page_kib,
        threads: status_field(&status, "Threads:").unwrap_or(0),
    })
}

/// Descriptors a process has open (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// The memory page size in bytes (`statm` counts pages).
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096)
}

/// The first number after `key` in a `/proc/<pid>/status` text (kB for
/// the `Vm*`/`Rss*` lines).
fn status_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// `statm`'s size, resident and shared, in pages.
fn parse_statm(statm: &str) -> Option<(u64, u64, u64)> {
    let mut f = statm.split_whitespace().map(|x| x.parse::<u64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// CPU time (user + system) a process has used, in clock ticks, from
/// `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Summed CPU ticks of several processes.
pub fn total_cpu_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_ticks(*p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(own_rss().is_some_and(|b| b > 0));
        assert!(cpu_ticks(std::process::id()).is_some());
        let m = proc_memory(std::process::id()).expect("own /proc");
        assert!(
            m.rss_kib > 0 && m.hwm_kib >= m.rss_kib / 2 && m.threads >= 1,
            "{m:?}"
        );
        // VmRSS and statm's resident are read a moment apart.
        assert!(
            m.statm_resident_kib.abs_diff(m.rss_kib) < m.rss_kib / 2,
            "{m:?}"
        );
        assert!(open_fds(std::process::id()).is_some_and(|n| n >= 3));
    }

    #[test]
    fn reads_status_fields_and_statm() {
        let status = "VmHWM:\t  5000 kB\nVmRSS:\t    1234 kB\nRssAnon:\t 800 kB\nThreads:\t7\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(1234));
        assert_eq!(status_field(status, "Threads:"), Some(7));
        assert_eq!(status_field(status, "VmSwap:"), None);
        assert_eq!(
            parse_statm("2000 300 100 5 0 900 0\n"),
            Some((2000, 300, 100))
        );
        assert_eq!(parse_statm("2000 x"), None);
    }

    #[test]
    fn quantiles_in_milliseconds() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("in range");
        }
        let q = Quantiles::of(&h);
        assert!((q.p50 - 500.0).abs() < 1.0, "{q:?}");
        assert!((q.max - 1000.0).abs() < 1.0, "{q:?}");
    }
}
