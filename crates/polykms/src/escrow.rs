//! `polykms escrow keygen`: make the key pair of a `type = "escrow"` backend. The public key
//! goes to every node; the private key goes offline (a safe, a separate HSM, a break-glass
//! vault) and comes back only for a recovery (docs/operations.md).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::exit::{CANT_CREATE, Failure};

#[derive(Debug, Subcommand)]
pub enum EscrowCommand {
    /// Write a fresh escrow key pair (X-Wing: ML-KEM-768 + X25519) and print the public key's
    /// fingerprint, the key version the escrow backend reports. The private key file is mode
    /// 0600; neither file is ever overwritten. Exits 0 when written, 64 on bad flags, 73 when a
    /// file exists or cannot be created.
    Keygen {
        /// Where to write the public key (for `public_key_file`).
        #[arg(long)]
        public_out: PathBuf,
        /// Where to write the private key (keep it offline; `private_key_file` in recovery).
        #[arg(long)]
        private_out: PathBuf,
    },
}

pub fn run(command: EscrowCommand) -> Result<(), Failure> {
    match command {
        EscrowCommand::Keygen {
            public_out,
            private_out,
        } => keygen(&public_out, &private_out),
    }
}

fn keygen(public_out: &Path, private_out: &Path) -> Result<(), Failure> {
    if public_out == private_out {
        return Err(Failure::Config(format!(
            "--public-out and --private-out both name {}; give two files",
            public_out.display()
        )));
    }
    let fingerprint =
        polykms_escrow::generate_key_pair(public_out, private_out).map_err(|e| Failure::Exit {
            code: CANT_CREATE,
            message: e.message().to_string(),
        })?;
    println!("wrote escrow public key  {}", public_out.display());
    println!(
        "wrote escrow private key {} (mode 0600)",
        private_out.display()
    );
    println!("fingerprint: {fingerprint}");
    println!("Move the private key offline now: a node that holds it can open every escrow wrap.");
    Ok(())
}
