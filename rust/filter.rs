// SPDX-License-Identifier: Apache-2.0
//! What is watched and what is noise: the extraConfig ignore set, the namespace/name key and
//! its parser (spec 2.2, 2.3). The lists themselves live in `vmwatch.settings` and are passed in.

use hashbrown::HashSet;

/// Property path whose value is an `ArrayOfOptionValue`, filtered and sorted by key.
pub const EXTRA_CONFIG_PATH: &str = "config.extraConfig";
/// Prefix of a keyed extraConfig path, e.g. `config.extraConfig["guestinfo.userdata"]`.
pub const EXTRA_CONFIG_KEYED_PREFIX: &str = "config.extraConfig[\"";
/// Property path whose value is an `ArrayOfVirtualDevice`, sorted by integer device key.
pub const DEVICE_PATH: &str = "config.hardware.device";
/// Default extraConfig key carrying `"<namespace>/<name>"` (spec 2.3).
pub const DEFAULT_NAME_KEY: &str = "vmservice.namespacedName";

/// The extraConfig filter: which keys are noise, and which key names the Kubernetes object.
#[derive(Debug, Clone)]
pub struct Filter {
    /// `None` keeps every key (`vmwatch decode --no-filter`).
    ignored: Option<HashSet<Box<[u8]>>>,
    name_key: Box<[u8]>,
}

impl Filter {
    pub fn new<I, S>(ignored: Option<I>, name_key: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Filter {
            ignored: ignored.map(|keys| keys.into_iter().map(|k| k.as_ref().as_bytes().into()).collect()),
            name_key: name_key.as_bytes().into(),
        }
    }

    /// Exact, case-sensitive match (spec 2.2).
    #[inline]
    pub fn is_ignored(&self, key: &[u8]) -> bool {
        match &self.ignored {
            Some(set) => set.contains(key),
            None => false,
        }
    }

    #[inline]
    pub fn name_key(&self) -> &[u8] {
        &self.name_key
    }

    pub fn ignored_len(&self) -> usize {
        self.ignored.as_ref().map_or(0, |s| s.len())
    }
}

/// `"ns/name"` → `(ns, name)`; anything that is not exactly two non-empty parts → `None` (spec 2.3).
pub fn parse_namespaced_name(value: &str) -> Option<(&str, &str)> {
    let (ns, name) = value.split_once('/')?;
    if ns.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((ns, name))
}

/// The key of a keyed extraConfig path: `config.extraConfig["k"]` → `k`.
pub fn keyed_extra_config_key(path: &str) -> Option<&str> {
    path.strip_prefix(EXTRA_CONFIG_KEYED_PREFIX)?.strip_suffix("\"]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_name() {
        assert_eq!(parse_namespaced_name("a/b"), Some(("a", "b")));
        assert_eq!(parse_namespaced_name("a/b/c"), None);
        assert_eq!(parse_namespaced_name("/b"), None);
        assert_eq!(parse_namespaced_name("a/"), None);
        assert_eq!(parse_namespaced_name("ab"), None);
        assert_eq!(parse_namespaced_name(""), None);
    }

    #[test]
    fn keyed() {
        assert_eq!(keyed_extra_config_key("config.extraConfig[\"a.b\"]"), Some("a.b"));
        assert_eq!(keyed_extra_config_key("config.extraConfig"), None);
    }

    #[test]
    fn ignore() {
        let f = Filter::new(Some(["x", "y"]), DEFAULT_NAME_KEY);
        assert!(f.is_ignored(b"x"));
        assert!(!f.is_ignored(b"X"));
        let all = Filter::new(None::<Vec<String>>, DEFAULT_NAME_KEY);
        assert!(!all.is_ignored(b"x"));
    }
}
