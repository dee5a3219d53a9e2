//! The hand-off between a running `gatehouse dev` and `gatehouse token --dev`: a small JSON file
//! holding the development issuer's URL and private key, readable only by the user.
//!
//! Location: `$GATEHOUSE_DEV_STATE` if set (tests run several `dev`s side by side), else
//! `$XDG_RUNTIME_DIR/gatehouse-dev/state.json`, else `${TMPDIR:-/tmp}/gatehouse-dev-$UID/state.json`.
//! The directory is created 0700 and the file 0600; a directory that someone else owns or others
//! can open is refused, since in a shared `/tmp` it could be planted.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::mint::now_unix;
use super::{Alg, KeyError, MintOptions, SigningKey};

/// What `gatehouse dev` publishes about itself. `Debug` redacts `key_pem`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DevState {
    /// The `iss` tokens must carry (the discovery document's `issuer`).
    pub issuer: String,
    pub discovery_url: String,
    pub jwks_url: String,
    pub kid: String,
    pub alg: Alg,
    /// The issuer's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The edge's base URL and the route path it serves.
    pub edge_url: String,
    #[serde(default)]
    pub route_path: String,
    pub agent_url: String,
    /// Token defaults that satisfy the dev route's authorizer.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub audience: Vec<String>,
    /// The `gatehouse dev` process, to tell a live state file from one left by a crash.
    pub pid: u32,
    pub started_at: i64,
}

impl fmt::Debug for DevState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevState")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("key_pem", &"[redacted]")
            .field("edge_url", &self.edge_url)
            .field("route_path", &self.route_path)
            .field("agent_url", &self.agent_url)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Why the state file could not be written or used.
#[derive(Debug)]
#[non_exhaustive]
pub enum DevStateError {
    NotRunning {
        path: PathBuf,
    },
    Stale {
        path: PathBuf,
        pid: u32,
    },
    Insecure {
        path: PathBuf,
        why: &'static str,
    },
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    Key(KeyError),
}

impl fmt::Display for DevStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DevStateError::NotRunning { path } => write!(
                f,
                "no running `gatehouse dev` found ({} does not exist): start it first with `gatehouse dev`",
                path.display()
            ),
            DevStateError::Stale { path, pid } => write!(
                f,
                "`gatehouse dev` (pid {pid}) is no longer running; {} is stale: start `gatehouse dev` again",
                path.display()
            ),
            DevStateError::Insecure { path, why } => write!(
                f,
                "refusing to use {}: {why}; remove it or set GATEHOUSE_DEV_STATE to another file",
                path.display()
            ),
            DevStateError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            DevStateError::Parse { path, source } => write!(
                f,
                "{} is not a gatehouse dev state file ({source}): restart `gatehouse dev`",
                path.display()
            ),
            DevStateError::Key(e) => write!(f, "the dev state's key: {e}"),
        }
    }
}

impl std::error::Error for DevStateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DevStateError::Io { source, .. } => Some(source),
            DevStateError::Parse { source, .. } => Some(source),
            DevStateError::Key(e) => Some(e),
            _ => None,
        }
    }
}

impl DevState {
    /// Describe a running dev setup signed by `key`; `pid` and `started_at` are this process.
    pub fn new(
        key: &SigningKey,
        issuer: &str,
        discovery_url: &str,
        jwks_url: &str,
    ) -> Result<Self, KeyError> {
        Ok(DevState {
            issuer: issuer.to_owned(),
            discovery_url: discovery_url.to_owned(),
            jwks_url: jwks_url.to_owned(),
            kid: key.kid().to_owned(),
            alg: key.alg(),
            key_pem: key.to_pkcs8_pem()?,
            edge_url: String::new(),
            route_path: String::new(),
            agent_url: String::new(),
            client_id: None,
            scope: None,
            audience: Vec::new(),
            pid: std::process::id(),
            started_at: now_unix(),
        })
    }

    /// Where the state file lives (see the module docs).
    pub fn path() -> PathBuf {
        Self::location().0
    }

    /// The path, and whether it is the shared default location whose directory must be checked
    /// (an explicit `GATEHOUSE_DEV_STATE` is the user's choice).
    fn location() -> (PathBuf, bool) {
        if let Some(p) = std::env::var_os("GATEHOUSE_DEV_STATE").filter(|p| !p.is_empty()) {
            return (PathBuf::from(p), false);
        }
        if let Some(rt) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
            return (
                PathBuf::from(rt).join("gatehouse-dev").join("state.json"),
                true,
            );
        }
        let tmp = std::env::var_os("TMPDIR")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let dir = tmp.join(format!("gatehouse-dev-{}", user_tag()));
        (dir.join("state.json"), true)
    }

    /// Write to [`DevState::path`]; returns the path written.
    pub fn write(&self) -> Result<PathBuf, DevStateError> {
        let (path, check) = Self::location();
        if let Some(dir) = path.parent().filter(|_| check) {
            create_private_dir(dir).map_err(|source| DevStateError::Io {
                path: dir.to_owned(),
                source,
            })?;
            check_private_dir(dir)?;
        }
        self.write_to(&path)?;
        Ok(path)
    }

    /// Read from [`DevState::path`], refusing a file whose `gatehouse dev` has exited.
    pub fn read() -> Result<Self, DevStateError> {
        let (path, check) = Self::location();
        if let Some(dir) = path.parent().filter(|d| check && d.exists()) {
            check_private_dir(dir)?;
        }
        Self::read_from(&path)
    }

    /// Write atomically (temporary file + rename), mode 0600; a missing directory is made 0700.
    pub fn write_to(&self, path: &Path) -> Result<(), DevStateError> {
        let io = |source| DevStateError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|source| DevStateError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let json = serde_json::to_vec_pretty(self).map_err(|source| DevStateError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let mut file = private_file(&tmp).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Read a state file and check that its `gatehouse dev` is still running.
    pub fn read_from(path: &Path) -> Result<Self, DevStateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DevStateError::NotRunning {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(DevStateError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let state: DevState =
            serde_json::from_slice(&bytes).map_err(|source| DevStateError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if !process_alive(state.pid) {
            return Err(DevStateError::Stale {
                path: path.to_owned(),
                pid: state.pid,
            });
        }
        Ok(state)
    }

    /// Remove [`DevState::path`] if this process wrote it (when `gatehouse dev` exits).
    pub fn remove() {
        Self::remove_from(&Self::path());
    }

    /// Remove the file if this process wrote it.
    pub fn remove_from(path: &Path) {
        if let Ok(s) = std::fs::read(path)
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice::<DevState>(&b).map_err(|_| ()))
            && s.pid == std::process::id()
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The issuer's signing key.
    pub fn signing_key(&self) -> Result<SigningKey, DevStateError> {
        SigningKey::from_pem(&self.key_pem, Some(self.alg), Some(self.kid.clone()))
            .map_err(DevStateError::Key)
    }

    /// Mint options that the dev route accepts: this issuer, its audience, client and scope.
    pub fn mint_options(&self) -> MintOptions {
        MintOptions {
            iss: self.issuer.clone(),
            sub: Some("dev-user".into()),
            aud: self.audience.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            ..MintOptions::default()
        }
    }
}

/// `$UID` without libc: the owner of `/proc/self` is the effective uid. Falls back to the user
/// name where there is no procfs.
fn user_tag() -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if let Ok(m) = std::fs::metadata("/proc/self") {
            return m.uid().to_string();
        }
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "user".into())
}

fn process_alive(pid: u32) -> bool {
    // Only decidable with procfs; elsewhere trust the file.
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn check_private_dir(dir: &Path) -> Result<(), DevStateError> {
    use std::os::unix::fs::MetadataExt as _;
    let insecure = |why| DevStateError::Insecure {
        path: dir.to_owned(),
        why,
    };
    // symlink_metadata: a symlink planted in a shared /tmp must not redirect us.
    let meta = std::fs::symlink_metadata(dir).map_err(|source| DevStateError::Io {
        path: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(insecure("it is not a directory"));
    }
    if let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid())
        && meta.uid() != me
    {
        return Err(insecure("another user owns it"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(insecure("other users can open it (it should be mode 0700)"));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_dir(_dir: &Path) -> Result<(), DevStateError> {
    Ok(())
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}
