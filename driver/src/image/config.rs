//! The bits of an OCI/docker image config strata reads and writes.

use serde_json::{json, Value};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The `rootfs.diff_ids` of a config.
pub fn diff_ids(config: &[u8]) -> Result<Vec<Digest>> {
    let v: Value = serde_json::from_slice(config).map_err(|e| bad(format!("not JSON: {e}")))?;
    let ids = v
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no rootfs.diff_ids".into()))?;
    ids.iter()
        .map(|d| {
            d.as_str()
                .ok_or_else(|| bad("diff_id is not a string".into()))
                .and_then(|s| Digest::parse(s).map_err(|e| bad(e.to_string())))
        })
        .collect()
}

/// `created_by` of each history entry that made a layer (empty_layer ones
/// are skipped), aligned with the layers.
pub fn layer_history(config: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(config) else {
        return Vec::new();
    };
    v.get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter(|e| {
                    !e.get("empty_layer")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                })
                .map(|e| {
                    e.get("created_by")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A config for an image strata made itself (plain import, commit).
pub fn new_config(base: Option<&[u8]>, diff_ids: &[Digest], created_by: &str) -> Vec<u8> {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut v: Value = base
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_else(|| json!({"architecture": host_arch(), "os": "linux", "config": {}}));
    v["created"] = json!(now);
    v["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    let mut history = v
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    history.push(json!({"created": now, "created_by": created_by}));
    v["history"] = Value::Array(history);
    serde_json::to_vec(&v).expect("JSON values serialise")
}

/// `config` listing `diff_ids` as its layers: the same bytes (and so the
/// same image ID) when they are the ones it lists already.
pub fn with_diff_ids(config: &[u8], diff_ids: &[Digest]) -> Result<Vec<u8>> {
    if self::diff_ids(config)? == diff_ids {
        return Ok(config.to_vec());
    }
    let mut v: Value = serde_json::from_slice(config).map_err(|e| bad(format!("not JSON: {e}")))?;
    v["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    Ok(serde_json::to_vec(&v).expect("JSON values serialise"))
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn bad(reason: String) -> Error {
    Error::InvalidImage {
        source_name: "config".into(),
        reason,
    }
}
