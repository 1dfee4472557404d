//! Reading the guest's console back into per-test outcomes.

use std::collections::BTreeMap;
use std::time::Duration;

use super::image::MARK;

/// The pseudo test binary that runs `strata-prof doctor` in the guest.
pub const DOCTOR: &str = "doctor";

/// Backends doctor must report available on every kernel of the matrix:
/// they are stock distro kernels, with BTF, kprobes and trampolines.
pub const EXPECTED_BACKENDS: &[&str] = &["fentry", "kprobe", "tracepoint"];

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Passed,
    Failed,
    Ignored,
    /// Deliberately not run in the guest, with the reason.
    NotRun(String),
    /// Meant to run, but no result came back (crash, timeout), with why.
    NoReport(String),
}

impl Outcome {
    fn is_ok(&self) -> bool {
        matches!(
            self,
            Outcome::Passed | Outcome::Ignored | Outcome::NotRun(_)
        )
    }

    fn short(&self) -> &'static str {
        match self {
            Outcome::Passed => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Ignored => "ignored",
            Outcome::NotRun(_) => "not run",
            Outcome::NoReport(_) => "NO RESULT",
        }
    }
}

pub struct Report {
    pub kernel: String,
    release: String,
    elapsed: Duration,
    /// (binary, test) -> outcome, for every test the host listed.
    tests: BTreeMap<(String, String), Outcome>,
}

impl Report {
    pub fn from_log(
        kernel: &str,
        log: &str,
        expected: &BTreeMap<String, Vec<String>>,
        not_run: &BTreeMap<(String, String), &str>,
        elapsed: Duration,
    ) -> Report {
        let mut release = String::from("unknown: the guest never reached its runner");
        let mut seen: BTreeMap<(String, String), Outcome> = BTreeMap::new();
        let mut began = Vec::new();
        let mut ended: BTreeMap<String, String> = BTreeMap::new();
        let mut current: Option<&str> = None;
        for line in log.lines() {
            // The console may put terminal escapes before a mark.
            if let Some(rest) = line.find(MARK).map(|at| line[at + MARK.len()..].trim()) {
                if let Some(r) = rest.strip_prefix("kernel ") {
                    release = r.to_string();
                } else if let Some(b) = rest.strip_prefix("begin ") {
                    current = expected.get_key_value(b).map(|(k, _)| k.as_str());
                    began.push(b.to_string());
                } else if let Some(e) = rest.strip_prefix("end ") {
                    if let Some((b, rc)) = e.split_once(' ') {
                        ended.insert(b.to_string(), rc.to_string());
                    }
                    current = None;
                }
                continue;
            }
            let Some(bin) = current else { continue };
            if bin == DOCTOR {
                // "<backend>  available|unavailable  <why>"
                let mut words = line.split_whitespace();
                if let (Some(b), Some(state)) = (words.next(), words.next()) {
                    if EXPECTED_BACKENDS.contains(&b) {
                        let outcome = if state == "available" {
                            Outcome::Passed
                        } else {
                            Outcome::Failed
                        };
                        seen.insert((bin.to_string(), format!("{b}_available")), outcome);
                    }
                }
                continue;
            }
            // Output of a test's child processes can share the line, so
            // look for the result anywhere in it.
            for t in &expected[bin] {
                let head = format!("test {t} ... ");
                let Some(at) = line.find(&head) else { continue };
                let outcome = match line[at + head.len()..].split_whitespace().next() {
                    Some("ok") => Outcome::Passed,
                    Some("FAILED") => Outcome::Failed,
                    Some("ignored") => Outcome::Ignored,
                    _ => continue,
                };
                seen.insert((bin.to_string(), t.clone()), outcome);
            }
        }
        let timed_out = log.contains(&format!("{MARK} timeout"));
        let mut tests = BTreeMap::new();
        for (bin, names) in expected {
            for t in names {
                let key = (bin.clone(), t.clone());
                let outcome = if let Some(why) = not_run.get(&key) {
                    Outcome::NotRun(why.to_string())
                } else if let Some(o) = seen.get(&key) {
                    o.clone()
                } else if let Some(rc) = ended.get(bin) {
                    Outcome::NoReport(format!("the test binary ended ({rc}) without reporting it"))
                } else if began.contains(bin) {
                    Outcome::NoReport(if timed_out {
                        "the guest timed out while its binary ran".into()
                    } else {
                        "the guest stopped while its binary ran".into()
                    })
                } else {
                    Outcome::NoReport("the guest never started its binary".into())
                };
                tests.insert(key, outcome);
            }
        }
        Report {
            kernel: kernel.to_string(),
            release,
            elapsed,
            tests,
        }
    }

    pub fn all_passed(&self) -> bool {
        self.tests.values().all(Outcome::is_ok)
    }

    fn count(&self, short: &str) -> usize {
        self.tests.values().filter(|o| o.short() == short).count()
    }

    pub fn print(&self) {
        println!(
            "\nvm-test {} ({}): {} passed, {} failed, {} not run, {} without result, in {:.0} s",
            self.kernel,
            self.release,
            self.count("ok"),
            self.count("FAILED"),
            self.count("not run"),
            self.count("NO RESULT"),
            self.elapsed.as_secs_f64()
        );
        for ((bin, test), o) in &self.tests {
            match o {
                Outcome::NotRun(why) | Outcome::NoReport(why) => {
                    println!("  {bin}::{test} ... {}: {why}", o.short())
                }
                _ => println!("  {bin}::{test} ... {}", o.short()),
            }
        }
    }
}

/// Tests down, kernels across: only worth printing for several kernels.
pub fn print_matrix(reports: &[Report]) {
    if reports.len() < 2 {
        return;
    }
    let width = reports[0]
        .tests
        .keys()
        .map(|(b, t)| b.len() + t.len() + 2)
        .max()
        .unwrap_or(10);
    print!("\n{:width$}", "test");
    for r in reports {
        print!("  {:>12}", r.kernel);
    }
    println!();
    for key in reports[0].tests.keys() {
        print!("{:width$}", format!("{}::{}", key.0, key.1));
        for r in reports {
            print!("  {:>12}", r.tests.get(key).map_or("-", Outcome::short));
        }
        println!();
    }
}
