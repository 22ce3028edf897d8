//! The probes' clock (CLOCK_BOOTTIME) and UNIX time.

/// Converts CLOCK_BOOTTIME nanoseconds (the probes' clock) to UNIX time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// realtime - boottime, ns
    offset_ns: i128,
}

fn clock_ns(id: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(id)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0)
}

impl Clock {
    pub fn now() -> Clock {
        let boot = clock_ns(nix::time::ClockId::CLOCK_BOOTTIME);
        let real = clock_ns(nix::time::ClockId::CLOCK_REALTIME);
        Clock {
            offset_ns: real - boot,
        }
    }

    #[cfg(test)]
    pub fn with_offset(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// UNIX time in ns (0 before 1970), for display.
    pub fn unix_nanos(&self, ts_boot: u64) -> i64 {
        i64::try_from((i128::from(ts_boot) + self.offset_ns).max(0)).unwrap_or(i64::MAX)
    }

    pub fn unix_secs(&self, ts_boot: u64) -> u64 {
        let ns = i128::from(ts_boot) + self.offset_ns;
        u64::try_from(ns.max(0) / 1_000_000_000).unwrap_or(0)
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_converts_boot_time() {
        let c = Clock::with_offset(1_700_000_000_000_000_000);
        assert_eq!(c.unix_secs(5_500_000_000), 1_700_000_005);
        let now = Clock::now();
        let boot = clock_ns(nix::time::ClockId::CLOCK_BOOTTIME) as u64;
        assert!(now.unix_secs(boot).abs_diff(unix_now()) <= 1);
    }
}
