//! Choosing how to see copy-ups on this kernel, and saying why.
//!
//! In order of precision: fentry/fexit on overlayfs's copy-up functions,
//! kprobe/kretprobe on the same, and syscall tracepoints (every syscall
//! that can copy up, plus the inode-creation tracepoint to tell which calls
//! did). The first that works here wins; `--backend` forces one.

use std::fmt;
use std::path::Path;

use clap::ValueEnum;
use serde::Serialize;

use crate::btf::Btf;
use crate::tracefs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Fentry,
    Kprobe,
    Tracepoint,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        })
    }
}

/// Copy-up functions, most useful first; names differ between kernels.
/// The running kernel's release (`uname -r`), for titles and labels.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub const COPY_UP_FUNCTIONS: &[&str] =
    &["ovl_copy_up_flags", "ovl_copy_up_one", "ovl_copy_up_file"];

#[derive(Debug, Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct BackendReport {
    pub backend: Backend,
    pub available: bool,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct Doctor {
    pub checks: Vec<Check>,
    pub backends: Vec<BackendReport>,
    /// What `record` picks without `--backend`.
    pub chosen: Option<Backend>,
}

fn check(what: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        what: what.into(),
        ok,
        detail: detail.into(),
    }
}

/// Inspects the kernel. `fentry_load` is the result of actually loading
/// strata's fentry program (the only way to know it is permitted).
pub fn diagnose(fentry_load: Result<(), String>, kprobe_load: Result<(), String>) -> Doctor {
    let _ = tracefs::ensure_mounted();
    let mut checks = Vec::new();
    let btf = Btf::kernel();
    checks.push(check(
        "kernel BTF (/sys/kernel/btf/vmlinux)",
        btf.is_ok(),
        match &btf {
            Ok(_) => "present".to_string(),
            Err(e) => e.to_string(),
        },
    ));
    let overlay_module = Path::new("/sys/kernel/btf/overlay").exists();
    let overlay_loaded = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|f| f.lines().any(|l| l.ends_with("\toverlay")));
    checks.push(check(
        "overlayfs",
        overlay_loaded,
        if !overlay_loaded {
            "not registered (modprobe overlay)".into()
        } else if overlay_module {
            "a module: its functions' BTF is the split BTF /sys/kernel/btf/overlay".to_string()
        } else {
            "built in: its functions' BTF is in vmlinux".to_string()
        },
    ));
    let traceable =
        std::fs::read_to_string(Path::new(tracefs::TRACEFS).join("available_filter_functions"))
            .unwrap_or_default();
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let funcs: Vec<(&str, bool, bool, bool)> = COPY_UP_FUNCTIONS
        .iter()
        .map(|f| {
            let in_btf = btf.as_ref().is_ok_and(|b| b.has_func(f));
            let in_kallsyms = kallsyms
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some(*f));
            let in_ftrace = traceable
                .lines()
                .any(|l| l.split_whitespace().next() == Some(*f));
            (*f, in_btf, in_kallsyms, in_ftrace)
        })
        .collect();
    for (f, in_btf, in_kallsyms, in_ftrace) in &funcs {
        checks.push(check(
            &format!("function {f}"),
            *in_kallsyms && *in_ftrace,
            format!(
                "kallsyms: {}, BTF: {}, ftrace-traceable: {}",
                yes(*in_kallsyms),
                match (*in_btf, overlay_module) {
                    (true, true) => "yes, in overlay's split BTF",
                    (b, _) => yes(b),
                },
                yes(*in_ftrace)
            ),
        ));
    }
    let traceable_fn = funcs.iter().find(|f| f.2 && f.3).map(|f| f.0);
    let kprobes_built = kallsyms
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("register_kprobe"));
    let kprobe_events = Path::new(tracefs::TRACEFS).join("kprobe_events").exists();
    checks.push(check(
        "kprobes (CONFIG_KPROBES, kprobe_events)",
        kprobes_built && kprobe_events,
        format!(
            "register_kprobe in kallsyms: {}, tracefs kprobe_events: {}",
            yes(kprobes_built),
            yes(kprobe_events)
        ),
    ));
    checks.push(check(
        "fentry program load",
        fentry_load.is_ok(),
        match &fentry_load {
            Ok(()) => "permitted".to_string(),
            Err(e) => e.clone(),
        },
    ));
    checks.push(check(
        "kprobe program load (verifier)",
        kprobe_load.is_ok(),
        match &kprobe_load {
            Ok(()) => "passes the verifier".to_string(),
            Err(e) => e.clone(),
        },
    ));
    let syscall_tps = tracefs::exists("syscalls", "sys_enter_openat");
    let inode_tp = tracefs::exists("writeback", "writeback_dirty_inode_enqueue");
    checks.push(check(
        "syscall tracepoints",
        syscall_tps,
        if syscall_tps {
            "present"
        } else {
            "CONFIG_FTRACE_SYSCALLS is off"
        },
    ));
    checks.push(check(
        "writeback:writeback_dirty_inode_enqueue",
        inode_tp,
        if inode_tp {
            "present (tells which calls created upper inodes)"
        } else {
            "missing"
        },
    ));

    let fentry = match (&fentry_load, traceable_fn, overlay_module) {
        (Err(e), _, _) => (false, format!("fentry programs cannot load here: {e}")),
        (_, None, _) => (false, "no overlayfs copy-up function is traceable".into()),
        (Ok(()), Some(f), true) => (
            true,
            format!("fentry/fexit on {f}, in the overlay module's split BTF"),
        ),
        (Ok(()), Some(f), false) => (true, format!("fentry/fexit on {f}")),
    };
    let kprobe = match (kprobes_built && kprobe_events, traceable_fn) {
        (false, _) => (false, "kprobes are not compiled into this kernel".into()),
        (true, None) => (false, "no overlayfs copy-up function is in kallsyms".into()),
        (true, Some(f)) => (true, format!("kprobe/kretprobe on {f}")),
    };
    let tp = if syscall_tps && inode_tp && btf.is_ok() {
        (
            true,
            "syscall tracepoints + inode creation tracepoint; offsets from BTF".to_string(),
        )
    } else {
        (
            false,
            "needs syscall tracepoints, writeback_dirty_inode_enqueue and BTF".to_string(),
        )
    };
    let backends = vec![
        BackendReport {
            backend: Backend::Fentry,
            available: fentry.0,
            why: fentry.1,
        },
        BackendReport {
            backend: Backend::Kprobe,
            available: kprobe.0,
            why: kprobe.1,
        },
        BackendReport {
            backend: Backend::Tracepoint,
            available: tp.0,
            why: tp.1,
        },
    ];
    let chosen = backends.iter().find(|b| b.available).map(|b| b.backend);
    Doctor {
        checks,
        backends,
        chosen,
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
