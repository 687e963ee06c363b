//! The mock's own expectations files, built in: for each device that exists to demonstrate
//! failure, the cases it is known not to pass, in the format of
//! `anyverbs_conformance::expect`. `anyverbs-conform` applies them to the built-in mock on its
//! own, so that running the suite on such a device shows what it demonstrates instead of
//! failing.

/// An expectations file the mock ships for one of its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtin {
    /// The device it is for.
    pub device: &'static str,
    /// Where the file is in the repository (`provider-mock/expectations/...`), to name it.
    pub path: &'static str,
    /// Its text.
    pub text: &'static str,
    /// What the device demonstrates, in a few words.
    pub purpose: &'static str,
    /// The wait bound (`--timeout`) that suits it: its expected failures wait out deadlines.
    pub timeout: std::time::Duration,
}

/// Every built-in expectations file.
pub const ALL: &[Builtin] = &[Builtin {
    device: "mockdead0",
    path: "provider-mock/expectations/mockdead0.expect",
    text: include_str!("../expectations/mockdead0.expect"),
    purpose: "demonstrates failure: a NIC in fatal error that nobody reported, where nothing \
              ever completes and only drain accounts for the WRs",
    timeout: std::time::Duration::from_millis(500),
}];

/// The built-in expectations file of `device`, if the mock ships one.
pub fn for_device(device: &str) -> Option<&'static Builtin> {
    ALL.iter().find(|b| b.device == device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_names_a_device_of_the_default_fabric() {
        let names: Vec<String> = crate::FabricConfig::default()
            .devices
            .iter()
            .map(|d| d.name.clone())
            .collect();
        for b in ALL {
            assert!(names.iter().any(|n| n == b.device), "{}", b.device);
            assert!(
                b.path.ends_with(&format!("{}.expect", b.device)),
                "{}",
                b.path
            );
            assert!(for_device(b.device).is_some());
        }
        assert!(for_device("mock0").is_none());
    }
}
