//! Which image of a multi-platform index to take: `os/arch[/variant]`,
//! by default the host's. One rule for OCI layouts and registries alike.

use std::fmt;

use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: super::config::host_arch().into(),
            variant: None,
        }
    }

    /// `linux/arm64`, `linux/arm/v7`: as docker's `--platform`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok) {
            return Err(Error::Invalid(format!(
                "platform {s:?} is not OS/ARCH[/VARIANT] (e.g. linux/arm64)"
            )));
        }
        Ok(Platform {
            os: parts[0].to_lowercase(),
            architecture: parts[1].to_lowercase(),
            variant: parts.get(2).map(|v| v.to_lowercase()),
        })
    }

    /// Whether an index entry's `platform` object is this one. A variant
    /// asked for must match (arm64's `v8` is what no variant means);
    /// none asked for takes any.
    pub fn matches(&self, platform: Option<&Value>) -> bool {
        let field = |k: &str| platform.and_then(|p| p.get(k)).and_then(Value::as_str);
        let os = field("os").unwrap_or("linux");
        let Some(arch) = field("architecture") else {
            return false;
        };
        if os != self.os || arch != self.architecture {
            return false;
        }
        let implied = |v: Option<&str>| match (arch, v) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        match &self.variant {
            None => true,
            Some(want) => implied(field("variant")).as_deref() == Some(want.as_str()),
        }
    }

    /// The first of an index's `manifests` for this platform.
    pub fn pick<'a>(&self, entries: &'a [Value]) -> Option<&'a Value> {
        entries.iter().find(|m| self.matches(m.get("platform")))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_by_os_arch_and_variant() {
        let entries = vec![
            json!({"digest": "a", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}),
            json!({"digest": "b", "platform": {"os": "linux", "architecture": "arm64"}}),
            json!({"digest": "c", "platform": {"os": "linux", "architecture": "amd64"}}),
            json!({"digest": "d", "platform": {"os": "windows", "architecture": "amd64"}}),
        ];
        let pick = |s: &str| {
            Platform::parse(s)
                .unwrap()
                .pick(&entries)
                .map(|e| e["digest"].clone())
        };
        assert_eq!(pick("linux/amd64"), Some(json!("c")));
        assert_eq!(pick("linux/arm64/v8"), Some(json!("b")));
        assert_eq!(pick("linux/arm/v7"), Some(json!("a")));
        assert_eq!(pick("linux/arm/v6"), None);
        assert_eq!(pick("windows/amd64"), Some(json!("d")));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/amd64/v1/x").is_err());
    }
}
