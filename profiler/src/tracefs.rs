//! tracefs: where tracepoints are, and their record layouts.
//!
//! Field offsets are read from each tracepoint's `format` file rather than
//! assumed, like struct offsets from BTF.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs and bpffs where they are missing (we run as root).
pub fn ensure_mounted() -> Result<()> {
    if !Path::new(TRACEFS).join("events").exists() {
        std::fs::create_dir_all(TRACEFS).ok();
        nix::mount::mount(
            Some("tracefs"),
            TRACEFS,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting tracefs at {TRACEFS}"))?;
    }
    let bpffs = Path::new("/sys/fs/bpf");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf"))
    {
        std::fs::create_dir_all(bpffs).ok();
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting bpffs at /sys/fs/bpf")?;
    }
    Ok(())
}

pub fn event_dir(category: &str, name: &str) -> PathBuf {
    Path::new(TRACEFS).join("events").join(category).join(name)
}

pub fn exists(category: &str, name: &str) -> bool {
    event_dir(category, name).join("format").exists()
}

/// One tracepoint's fields: name -> (offset, size).
pub struct Format {
    pub name: String,
    fields: HashMap<String, (u32, u32)>,
    print_fmt: String,
}

impl Format {
    pub fn read(category: &str, name: &str) -> Result<Format> {
        let path = event_dir(category, name).join("format");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(Format::parse(&format!("{category}:{name}"), &text))
    }

    pub fn parse(name: &str, text: &str) -> Format {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = "";
            let (mut off, mut size) = (None, None);
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    off = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                } else if decl.is_empty() {
                    decl = part;
                }
            }
            // "const char * filename" / "unsigned long args[6]": the name
            // is the last word, minus any array suffix.
            let field = decl
                .rsplit([' ', '*'])
                .next()
                .unwrap_or("")
                .split('[')
                .next()
                .unwrap_or("");
            if let (Some(o), Some(s)) = (off, size) {
                fields.insert(field.to_string(), (o, s));
            }
        }
        let print_fmt = text
            .lines()
            .find_map(|l| l.strip_prefix("print fmt: "))
            .unwrap_or("")
            .to_string();
        Format {
            name: name.to_string(),
            fields,
            print_fmt,
        }
    }

    /// The expression a `__print_flags` table gives for `flag`: `(1 << 3)`
    /// on kernels where the flag is a #define, the bare name where it is an
    /// enum constant (then look it up in BTF).
    pub fn flag_expr(&self, flag: &str) -> Option<&str> {
        let needle = format!(", \"{flag}\"}}");
        let end = self.print_fmt.find(&needle)?;
        let start = self.print_fmt[..end].rfind('{')? + 1;
        Some(self.print_fmt[start..end].trim())
    }

    pub fn offset(&self, field: &str) -> Result<u32> {
        match self.fields.get(field) {
            Some((o, _)) => Ok(*o),
            None => bail!("tracepoint {} has no field {field}", self.name),
        }
    }

    /// The syscall arguments of a `syscalls:sys_enter_*` record: where the
    /// first one starts, after checking they are consecutive 8-byte slots.
    pub fn syscall_args_offset(&self) -> Result<u32> {
        let mut args: Vec<(u32, u32)> = self
            .fields
            .iter()
            .filter(|(k, _)| !k.starts_with("common_") && k.as_str() != "__syscall_nr")
            .map(|(_, v)| *v)
            .collect();
        args.sort();
        let Some(first) = args.first() else {
            bail!("tracepoint {} has no argument fields", self.name)
        };
        for (i, (off, size)) in args.iter().enumerate() {
            if *size != 8 || *off != first.0 + 8 * i as u32 {
                bail!(
                    "tracepoint {}: arguments are not consecutive 8-byte fields",
                    self.name
                );
            }
        }
        Ok(first.0)
    }
}

/// Evaluates `(1 << N)`, `0x..` or decimal flag expressions.
pub fn eval_flag(expr: &str) -> Option<u64> {
    let e = expr
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim();
    if let Some((a, b)) = e.split_once("<<") {
        let (a, b) = (eval_flag(a)?, eval_flag(b)?);
        return a.checked_shl(b as u32);
    }
    match e.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => e.trim_end_matches(['U', 'L', 'u', 'l']).parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_from_print_fmt_of_either_kind() {
        let old = "print fmt: \"x\", __print_flags(REC->state, \"|\", {(1 << 0), \"I_DIRTY_SYNC\"}, {(1 << 3), \"I_NEW\"})";
        let f = Format::parse(
            "t",
            &format!("field:int a;\toffset:8;\tsize:4;\tsigned:1;\n{old}"),
        );
        assert_eq!(f.flag_expr("I_NEW"), Some("(1 << 3)"));
        assert_eq!(eval_flag("(1 << 3)"), Some(8));
        assert_eq!(eval_flag("0x10"), Some(16));
        let new = Format::parse(
            "t",
            "print fmt: \"x\", __print_flags(REC->state, \"|\", {I_NEW, \"I_NEW\"})",
        );
        assert_eq!(new.flag_expr("I_NEW"), Some("I_NEW"));
        assert_eq!(eval_flag("I_NEW"), None);
    }

    #[test]
    fn parses_a_real_syscall_format() {
        ensure_mounted().unwrap();
        let f = Format::read("syscalls", "sys_enter_openat").unwrap();
        let args = f.syscall_args_offset().unwrap();
        assert_eq!(f.offset("dfd").unwrap(), args);
        assert_eq!(f.offset("filename").unwrap(), args + 8);
        assert!(f.offset("__syscall_nr").unwrap() < args);
        let exit = Format::read("syscalls", "sys_exit_openat").unwrap();
        assert!(exit.offset("ret").is_ok());
    }
}
