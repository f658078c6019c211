//! Whether the shared-config profile the SDK will use assumes a role with STS AssumeRole
//! (`role_arn` with `source_profile` or `credential_source`): the SDK signs that call with
//! `aws-sigv4`, outside the FIPS module, so a FIPS build refuses it at config load like
//! `assume_role_arn`. A profile with `web_identity_token_file` (AssumeRoleWithWebIdentity, an
//! unsigned call) is fine.

use std::path::PathBuf;

/// A profile that assumes a role by a signed STS call: its name and the file naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedRoleProfile {
    pub profile: String,
    pub file: PathBuf,
}

/// Looks at the profile `profile` (else `AWS_PROFILE`, else `default`) in the config file
/// (`AWS_CONFIG_FILE`, else `~/.aws/config`) and the credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`). Unreadable files name nothing:
/// the SDK reads the same files and fails on its own terms.
pub(crate) fn signed_role_profile(
    profile: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<SignedRoleProfile> {
    let name = profile
        .map(str::to_owned)
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let home = env("HOME").map(PathBuf::from);
    let files = [
        ("AWS_CONFIG_FILE", "config", true),
        ("AWS_SHARED_CREDENTIALS_FILE", "credentials", false),
    ];
    for (var, base, prefixed) in files {
        let Some(path) = env(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(base)))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if assumes_role_by_signed_call(&section(&text, &name, prefixed)) {
            return Some(SignedRoleProfile {
                profile: name,
                file: path,
            });
        }
    }
    None
}

/// The keys of the profile's section (`[default]`, `[profile NAME]` in the config file,
/// `[NAME]` in the credentials file).
fn section(text: &str, name: &str, config_file: bool) -> Vec<String> {
    let mut keys = Vec::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let header = header.trim();
            let profile = match header.strip_prefix("profile") {
                Some(rest) if config_file && rest.starts_with(char::is_whitespace) => rest.trim(),
                _ => header,
            };
            inside = profile == name;
            continue;
        }
        if inside && let Some((key, _)) = line.split_once('=') {
            keys.push(key.trim().to_ascii_lowercase());
        }
    }
    keys
}

fn assumes_role_by_signed_call(keys: &[String]) -> bool {
    let has = |k: &str| keys.iter().any(|key| key == k);
    has("role_arn") && !has("web_identity_token_file")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_for(dir: &std::path::Path, profile: Option<&str>) -> impl Fn(&str) -> Option<String> {
        let dir = dir.to_path_buf();
        let profile = profile.map(str::to_owned);
        move |var| match var {
            "HOME" => Some(dir.display().to_string()),
            "AWS_PROFILE" => profile.clone(),
            _ => None,
        }
    }

    fn home_with(config: &str, credentials: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".aws")).unwrap();
        std::fs::write(dir.path().join(".aws/config"), config).unwrap();
        std::fs::write(dir.path().join(".aws/credentials"), credentials).unwrap();
        dir
    }

    const CONFIG: &str = "\
[default]
region = eu-west-1

[profile chained]
role_arn = arn:aws:iam::111122223333:role/polykms
source_profile = default

[profile irsa]
role_arn = arn:aws:iam::111122223333:role/polykms
web_identity_token_file = /var/run/secrets/eks.amazonaws.com/serviceaccount/token

# [profile commented]
# role_arn = arn:aws:iam::111122223333:role/x
";

    #[test]
    fn a_profile_that_chains_a_role_is_named_with_its_file() {
        let home = home_with(CONFIG, "[default]\naws_access_key_id = AKIA\n");
        let found = signed_role_profile(Some("chained"), env_for(home.path(), None)).unwrap();
        assert_eq!(found.profile, "chained");
        assert_eq!(found.file, home.path().join(".aws/config"));
        // AWS_PROFILE when the config names none.
        let found = signed_role_profile(None, env_for(home.path(), Some("chained")));
        assert_eq!(found.map(|f| f.profile).as_deref(), Some("chained"));
    }

    #[test]
    fn web_identity_plain_keys_and_missing_files_name_nothing() {
        let home = home_with(CONFIG, "[default]\naws_access_key_id = AKIA\n");
        for profile in ["irsa", "default", "commented", "absent"] {
            assert_eq!(
                signed_role_profile(Some(profile), env_for(home.path(), None)),
                None,
                "{profile}"
            );
        }
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(signed_role_profile(None, env_for(empty.path(), None)), None);
    }

    #[test]
    fn the_credentials_file_uses_bare_section_names() {
        let home = home_with(
            "[default]\n",
            "[default]\nrole_arn = arn:aws:iam::1:role/r\ncredential_source = Ec2InstanceMetadata\n",
        );
        let found = signed_role_profile(None, env_for(home.path(), None)).unwrap();
        assert_eq!(found.file, home.path().join(".aws/credentials"));
        // `[profile default]` in a credentials file is not the default profile.
        let home = home_with("[default]\n", "[profile default]\nrole_arn = x\n");
        assert_eq!(signed_role_profile(None, env_for(home.path(), None)), None);
    }
}
