//! Records the git revision the binary is built from, for `polykms version`.
//!
//! `POLYKMS_GIT_REVISION` wins (deploy/image/build.sh sets it; so can a build from a source
//! tarball); otherwise `git rev-parse HEAD` when building inside a git checkout; otherwise
//! "unknown". A build outside git never fails because of this.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=POLYKMS_GIT_REVISION");
    let from_env = std::env::var("POLYKMS_GIT_REVISION")
        .ok()
        .filter(|s| !s.is_empty());
    let revision = from_env.or_else(|| {
        // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it names (a commit)
        // and packed-refs (a gc).
        if let (Some(dir), Some(common)) = (
            git(&["rev-parse", "--absolute-git-dir"]),
            git(&["rev-parse", "--git-common-dir"]),
        ) {
            let (dir, common) = (PathBuf::from(dir), PathBuf::from(common));
            println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
            println!(
                "cargo:rerun-if-changed={}",
                common.join("packed-refs").display()
            );
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                println!("cargo:rerun-if-changed={}", common.join(branch).display());
            }
        }
        git(&["rev-parse", "HEAD"])
    });
    println!(
        "cargo:rustc-env=POLYKMS_GIT_REVISION={}",
        revision.as_deref().unwrap_or("unknown")
    );
}
