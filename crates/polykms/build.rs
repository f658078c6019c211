//! Records the git revision the binary is built from, for `polykms version`.
//!
//! `POLYKMS_GIT_REVISION` wins (deploy/image/build.sh sets it; so can a build from a source
//! tarball); otherwise `git rev-parse HEAD` when building inside a git checkout; otherwise
//! "unknown". A build outside git never fails because of this.
//!
//! Release links of the binary on x86_64 glibc also get the two footprint settings of the
//! README ("Idle RSS"): packed relative relocations (DT_RELR) and startup.ld, the linker
//! script that keeps the code `serve` runs at start together (tools/startup-order.sh).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// `getconf GNU_LIBC_VERSION` ("glibc 2.36") as (major, minor).
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Release builds only (PROFILE is "release" for every profile inheriting it), native x86_64
/// glibc only: the loader that runs the binary is the build machine's (or, in the image, a copy
/// of it), and DT_RELR needs glibc 2.36. Debug and test builds link as before.
fn footprint_link_args() {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || env("TARGET") != env("HOST")
    {
        return;
    }
    // Relative relocations as a bitmap: ~10 KiB for the loader to read instead of an 870 KiB
    // table (idle RSS 12.3 -> 9.8 MiB measured); the binary then needs glibc >= 2.36.
    if glibc_version().is_some_and(|v| v >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // tools/startup-order.sh links without it and asks for a link map, which names the
    // functions of the stripped binary: the same build otherwise, so the same symbol hashes.
    println!("cargo:rerun-if-env-changed=POLYKMS_STARTUP_ORDER");
    println!("cargo:rerun-if-env-changed=POLYKMS_LINK_MAP");
    if let Some(map) = std::env::var_os("POLYKMS_LINK_MAP").filter(|m| !m.is_empty()) {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,-Map={}",
            map.to_string_lossy()
        );
    }
    let script = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("startup.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if script.exists() && env("POLYKMS_STARTUP_ORDER") != "off" {
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}

fn main() {
    footprint_link_args();
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
