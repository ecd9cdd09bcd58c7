//! The refresh-token store: one small JSON file per delegated credential,
//! `state_dir/tokens/<credential>.json`, mode 0600 in a 0700 directory.
//!
//! Microsoft rotates the refresh token on every use (o365-facts.md 3.5), so the file is rewritten
//! about once an hour for the life of the exporter, and a crash or a full disk must never lose
//! the chain. Every save is: a new temporary file in the same directory, write, fsync, rename over
//! the old file, fsync the directory. Until the rename the old file is untouched; after it the new
//! one is complete. A crash at any instant therefore leaves a usable token (old or new), and stray
//! temporary files are ignored by [`TokenStore::load`]. Access tokens are never written here.
//!
//! Each step can be made to fail through a [`Failpoint`], so tests can show that claim step by
//! step instead of trusting it. Mode bits and the directory fsync are Unix-only; elsewhere the
//! file inherits the directory's ACL and the rename is the commit point.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Largest token file read; real ones are about 2 kB.
const MAX_FILE: u64 = 64 * 1024;
const VERSION: u32 = 1;

/// The steps of one save, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    CreateDir,
    CreateTemp,
    Write,
    SyncFile,
    Rename,
    SyncDir,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::CreateDir,
        Step::CreateTemp,
        Step::Write,
        Step::SyncFile,
        Step::Rename,
        Step::SyncDir,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::CreateDir => "creating the directory",
            Step::CreateTemp => "creating the temporary file",
            Step::Write => "writing the temporary file",
            Step::SyncFile => "syncing the temporary file",
            Step::Rename => "renaming the temporary file over the token file",
            Step::SyncDir => "syncing the directory",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An injected fault (tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The step fails with this error kind; the save cleans up as it would for a real error.
    Fail(io::ErrorKind),
    /// The process "dies" before the step: nothing more happens, not even cleanup. At
    /// [`Step::Write`] half the bytes are written first (a torn write).
    Crash,
}

/// Called before each step; returning a fault injects it.
pub type Failpoint = Arc<dyn Fn(Step) -> Option<Fault> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot save the refresh token to {path} ({step}): {source}")]
    Write {
        path: PathBuf,
        step: Step,
        source: io::Error,
    },
    #[error("cannot read the refresh token file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a usable token file: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("credential name {0:?} cannot be used as a file name")]
    BadName(String),
}

/// What is kept for one credential.
#[derive(Clone)]
pub struct StoredToken {
    pub refresh_token: SecretString,
    /// The app the token was issued to; a token of another app is useless after a config change.
    pub client_id: String,
    /// Who signed in (from the token), for the status page and `login` messages.
    pub identity: Option<String>,
    /// Unix seconds.
    pub saved_at: i64,
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("refresh_token", &"[REDACTED]")
            .field("client_id", &self.client_id)
            .field("identity", &self.identity)
            .field("saved_at", &self.saved_at)
            .finish()
    }
}

/// The on-disk shape; the token only lives in this struct while it is being (de)serialised.
#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    credential: String,
    client_id: String,
    refresh_token: String,
    #[serde(default)]
    identity: Option<String>,
    saved_at: i64,
}

/// The token files of one `state_dir`.
#[derive(Clone)]
pub struct TokenStore {
    dir: PathBuf,
    failpoint: Option<Failpoint>,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("dir", &self.dir)
            .field("failpoint", &self.failpoint.is_some())
            .finish()
    }
}

impl TokenStore {
    /// The store under `state_dir` (nothing is touched until the first save).
    pub fn new(state_dir: &Path) -> TokenStore {
        TokenStore {
            dir: state_dir.join("tokens"),
            failpoint: None,
        }
    }

    /// The same store with `failpoint` consulted before every save step.
    pub fn with_failpoint(mut self, failpoint: Failpoint) -> TokenStore {
        self.failpoint = Some(failpoint);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The token file of `credential`.
    pub fn path(&self, credential: &str) -> Result<PathBuf, StoreError> {
        let ok = !credential.is_empty()
            && credential.len() <= 128
            && !credential.starts_with('.')
            && credential
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(StoreError::BadName(credential.to_string()));
        }
        Ok(self.dir.join(format!("{credential}.json")))
    }

    /// The stored token of `credential`; None when there is none (never signed in).
    pub fn load(&self, credential: &str) -> Result<Option<StoredToken>, StoreError> {
        let path = self.path(credential)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let mut text = Vec::new();
        file.take(MAX_FILE + 1)
            .read_to_end(&mut text)
            .map_err(|source| StoreError::Read {
                path: path.clone(),
                source,
            })?;
        if text.len() as u64 > MAX_FILE {
            return Err(StoreError::Corrupt {
                path,
                problem: format!("larger than {MAX_FILE} bytes"),
            });
        }
        // serde's messages can quote values; only the position is reported
        let f: FileFormat = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            problem: format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        })?;
        if f.version != VERSION || f.refresh_token.is_empty() {
            return Err(StoreError::Corrupt {
                path,
                problem: format!("version {} or an empty token", f.version),
            });
        }
        Ok(Some(StoredToken {
            refresh_token: SecretString::from(f.refresh_token),
            client_id: f.client_id,
            identity: f.identity,
            saved_at: f.saved_at,
        }))
    }

    /// Save `token` for `credential` atomically (see the module doc). On error the previous file
    /// is untouched (or, after the rename, already complete).
    pub fn save(&self, credential: &str, token: &StoredToken) -> Result<(), StoreError> {
        let path = self.path(credential)?;
        let data = serde_json::to_vec_pretty(&FileFormat {
            version: VERSION,
            credential: credential.to_string(),
            client_id: token.client_id.clone(),
            refresh_token: token.refresh_token.expose_secret().to_string(),
            identity: token.identity.clone(),
            saved_at: token.saved_at,
        })
        .map_err(|e| StoreError::Write {
            path: path.clone(),
            step: Step::Write,
            source: io::Error::other(e.to_string()),
        })?;
        let tmp = self.dir.join(format!(
            ".{credential}.json.{}.{:08x}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let err = |step, source| StoreError::Write {
            path: path.clone(),
            step,
            source,
        };

        self.step(Step::CreateDir)
            .and_then(|()| create_private_dir(&self.dir))
            .map_err(|e| err(Step::CreateDir, e))?;
        self.step(Step::CreateTemp)
            .and_then(|()| create_private_file(&tmp))
            .map_err(|e| err(Step::CreateTemp, e))?;
        // the temporary file exists from here on: remove it on every error except a crash
        let result = (|| -> Result<(), (Step, io::Error)> {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&tmp)
                .map_err(|e| (Step::Write, e))?;
            match self.fault(Step::Write) {
                Some(Fault::Crash) => {
                    let _ = f.write_all(&data[..data.len() / 2]);
                    return Err((Step::Write, crashed()));
                }
                Some(Fault::Fail(kind)) => return Err((Step::Write, injected(kind))),
                None => f.write_all(&data).map_err(|e| (Step::Write, e))?,
            }
            self.step(Step::SyncFile)
                .and_then(|()| f.sync_all())
                .map_err(|e| (Step::SyncFile, e))?;
            drop(f);
            self.step(Step::Rename)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| (Step::Rename, e))?;
            self.step(Step::SyncDir)
                .and_then(|()| sync_dir(&self.dir))
                .map_err(|e| (Step::SyncDir, e))
        })();
        match result {
            Ok(()) => {
                self.remove_stale_temp_files(credential);
                Ok(())
            }
            Err((step, e)) => {
                if !is_crash(&e) && step != Step::SyncDir {
                    let _ = std::fs::remove_file(&tmp);
                }
                Err(err(step, e))
            }
        }
    }

    /// Temporary files of saves that a crash interrupted (never read: the rename did not happen).
    /// Only those older than a minute go, so a save in flight in another process is left alone.
    fn remove_stale_temp_files(&self, credential: &str) {
        let prefix = format!(".{credential}.json.");
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten().take(10_000) {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with(&prefix) && name.ends_with(".tmp")) {
                continue;
            }
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn fault(&self, step: Step) -> Option<Fault> {
        self.failpoint.as_ref().and_then(|f| f(step))
    }

    /// Run the failpoint for `step`; a crash leaves everything as it is.
    fn step(&self, step: Step) -> io::Result<()> {
        match self.fault(step) {
            None => Ok(()),
            Some(Fault::Fail(kind)) => Err(injected(kind)),
            Some(Fault::Crash) => Err(crashed()),
        }
    }
}

fn injected(kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, format!("injected failure ({kind})"))
}

const CRASH: &str = "simulated crash";

fn crashed() -> io::Error {
    io::Error::other(CRASH)
}

fn is_crash(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.to_string() == CRASH
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// No mode bits: the directory inherits its parent's ACL.
#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(drop)
}

/// Makes the rename durable (POSIX: a rename lives in the directory's data).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory for fsync; the rename (MoveFileEx) is the commit point.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> StoredToken {
        StoredToken {
            refresh_token: SecretString::from(s.to_string()),
            client_id: "app".into(),
            identity: Some("user@contoso.example".into()),
            saved_at: 1,
        }
    }

    fn rt(t: &StoredToken) -> &str {
        t.refresh_token.expose_secret()
    }

    #[test]
    fn a_save_removes_temp_files_left_by_crashes_but_not_fresh_ones() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::new(d.path());
        s.save("ece", &tok("RT-1")).unwrap();
        let stale = s.dir().join(".ece.json.1234.0badcafe.tmp");
        let fresh = s.dir().join(".ece.json.1235.0badbeef.tmp");
        let other = s.dir().join(".other.json.1236.00000000.tmp");
        for p in [&stale, &fresh, &other] {
            std::fs::write(p, "{}").unwrap();
        }
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for p in [&stale, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(hour_ago)
                .unwrap();
        }
        s.save("ece", &tok("RT-2")).unwrap();
        assert!(!stale.exists(), "a crash's leftover is removed");
        assert!(
            fresh.exists(),
            "a save that may be in flight elsewhere is left alone"
        );
        assert!(other.exists(), "another credential's files are not touched");
        assert_eq!(rt(&s.load("ece").unwrap().unwrap()), "RT-2");
    }

    #[test]
    fn save_then_load_round_trips_with_private_modes() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::new(&d.path().join("state"));
        assert!(s.load("ece").unwrap().is_none());
        s.save("ece", &tok("RT-1")).unwrap();
        s.save("ece", &tok("RT-2")).unwrap();
        let got = s.load("ece").unwrap().unwrap();
        assert_eq!(rt(&got), "RT-2");
        assert_eq!(got.identity.as_deref(), Some("user@contoso.example"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&s.path("ece").unwrap()), 0o600);
            assert_eq!(mode(s.dir()), 0o700);
        }
        // only the token file remains: no temporary files
        let names: Vec<_> = std::fs::read_dir(s.dir()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert!(!format!("{got:?}").contains("RT-2"));
    }

    #[test]
    fn a_fault_at_every_step_leaves_a_usable_token() {
        for step in Step::ALL {
            for fault in [Fault::Fail(io::ErrorKind::StorageFull), Fault::Crash] {
                let d = tempfile::tempdir().unwrap();
                let plain = TokenStore::new(d.path());
                plain.save("ece", &tok("OLD")).unwrap();
                let s = plain
                    .clone()
                    .with_failpoint(Arc::new(move |st| (st == step).then_some(fault)));
                let e = s.save("ece", &tok("NEW")).unwrap_err();
                assert!(
                    matches!(e, StoreError::Write { step: st, .. } if st == step),
                    "{e}"
                );
                // a restart reads either the old or the new token, complete
                let got = plain.load("ece").unwrap().unwrap();
                let want = if step == Step::SyncDir { "NEW" } else { "OLD" };
                assert_eq!(rt(&got), want, "{step:?} {fault:?}");
                // and a later save works and wins
                plain.save("ece", &tok("LATER")).unwrap();
                assert_eq!(rt(&plain.load("ece").unwrap().unwrap()), "LATER");
                if matches!(fault, Fault::Fail(_)) && step != Step::SyncDir {
                    let n = std::fs::read_dir(plain.dir()).unwrap().count();
                    assert_eq!(n, 1, "temporary file left after {step:?}");
                }
            }
        }
    }

    #[test]
    fn first_save_crash_leaves_no_token_but_no_garbage_either() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::new(d.path())
            .with_failpoint(Arc::new(|st| (st == Step::Write).then_some(Fault::Crash)));
        assert!(s.save("ece", &tok("NEW")).is_err());
        // the torn temporary file is there but never read
        assert!(TokenStore::new(d.path()).load("ece").unwrap().is_none());
    }

    #[test]
    fn errors_name_the_step_and_path_and_never_the_token() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::new(d.path()).with_failpoint(Arc::new(|st| {
            (st == Step::CreateTemp).then_some(Fault::Fail(io::ErrorKind::ReadOnlyFilesystem))
        }));
        let e = s.save("ece", &tok("CANARY-RT")).unwrap_err().to_string();
        assert!(e.contains("creating the temporary file"), "{e}");
        assert!(e.contains("ece.json"), "{e}");
        assert!(!e.contains("CANARY"), "{e}");
    }

    #[test]
    fn bad_names_and_corrupt_files_are_errors_not_panics() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::new(d.path());
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(matches!(s.path(bad), Err(StoreError::BadName(_))), "{bad}");
        }
        std::fs::create_dir_all(s.dir()).unwrap();
        let p = s.path("x").unwrap();
        std::fs::write(&p, r#"{"version":1,"refresh_token":"SECRET-"#).unwrap();
        let e = s.load("x").unwrap_err().to_string();
        assert!(e.contains("not valid JSON") && !e.contains("SECRET"), "{e}");
        std::fs::write(&p, vec![b' '; (MAX_FILE + 10) as usize]).unwrap();
        assert!(matches!(s.load("x"), Err(StoreError::Corrupt { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn an_unwritable_state_dir_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        // a file where the directory should be: fails even as root
        let blocker = d.path().join("state");
        std::fs::write(&blocker, "x").unwrap();
        let s = TokenStore::new(&blocker);
        let e = s.save("ece", &tok("RT")).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Write {
                    step: Step::CreateDir,
                    ..
                }
            ),
            "{e}"
        );
    }
}
