//! `polykms escrow keygen`: make the key pair of a `type = "escrow"` backend. The public key
//! goes to every node; the private key goes offline (a safe, a separate HSM, a break-glass
//! vault) and comes back only for a recovery (docs/operations.md).

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use polykms_backend::crypto::FIPS_BUILD;
use polykms_escrow::Kem;

use crate::exit::{CANT_CREATE, Failure};

#[derive(Debug, Subcommand)]
pub enum EscrowCommand {
    /// Write a fresh escrow key pair (--kem: ML-KEM-1024, or X-Wing = ML-KEM-768 + X25519) and
    /// print the public key's fingerprint, the key version the escrow backend reports. The
    /// private key file is mode 0600; neither file is ever overwritten. Exits 0 when written,
    /// 64 on bad flags (x-wing in a FIPS build), 73 when a file exists or cannot be created.
    Keygen {
        /// The KEM: ml-kem-1024 (FIPS 203; AES-256-GCM) or x-wing (ML-KEM-768 + X25519;
        /// ChaCha20-Poly1305, not FIPS-approved). Default: x-wing, ml-kem-1024 in a FIPS build.
        #[arg(long, value_enum)]
        kem: Option<KemArg>,
        /// Where to write the public key (for `public_key_file`).
        #[arg(long)]
        public_out: PathBuf,
        /// Where to write the private key (keep it offline; `private_key_file` in recovery).
        #[arg(long)]
        private_out: PathBuf,
    },
}

/// `--kem` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KemArg {
    #[value(name = "ml-kem-1024")]
    MlKem1024,
    #[value(name = "x-wing")]
    XWing,
}

impl From<KemArg> for Kem {
    fn from(k: KemArg) -> Kem {
        match k {
            KemArg::MlKem1024 => Kem::MlKem1024,
            KemArg::XWing => Kem::XWing,
        }
    }
}

pub fn run(command: EscrowCommand) -> Result<(), Failure> {
    match command {
        EscrowCommand::Keygen {
            kem,
            public_out,
            private_out,
        } => keygen(
            kem.map_or(Kem::default_for(FIPS_BUILD), Kem::from),
            &public_out,
            &private_out,
        ),
    }
}

fn keygen(kem: Kem, public_out: &Path, private_out: &Path) -> Result<(), Failure> {
    kem.allowed(FIPS_BUILD)
        .map_err(|why| Failure::Config(format!("--kem {kem}: {why}")))?;
    if public_out == private_out {
        return Err(Failure::Config(format!(
            "--public-out and --private-out both name {}; give two files",
            public_out.display()
        )));
    }
    let fingerprint =
        polykms_escrow::generate_key_pair(public_out, private_out, kem).map_err(|e| {
            Failure::Exit {
                code: CANT_CREATE,
                message: e.message().to_string(),
            }
        })?;
    println!("wrote escrow public key  {}", public_out.display());
    println!(
        "wrote escrow private key {} (mode 0600)",
        private_out.display()
    );
    println!("suite: {}", kem.suite_name());
    println!("fingerprint: {fingerprint}");
    println!("Move the private key offline now: a node that holds it can open every escrow wrap.");
    Ok(())
}
