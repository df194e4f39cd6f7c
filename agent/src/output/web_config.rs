//! `--web.config.file`: the web configuration file of Prometheus' exporter-toolkit, so that a
//! file written for node_exporter works here too: `tls_server_config` (a certificate and key,
//! the lowest and highest TLS version, client certificates checked against a CA) and
//! `basic_auth_users` (user names and bcrypt hashes).
//!
//! What iotwatch does not implement is refused with the key's name, never ignored: a setting
//! someone relies on for protection (`client_allowed_sans`, `cipher_suites`, `rate_limit`...)
//! must not silently do nothing. Relative paths are relative to the file's directory, as in
//! exporter-toolkit. The file and the files it names are read again when one of them changes
//! (checked on every connection and request), so a renewed certificate or a new password needs
//! no restart; while the file is invalid, connections are refused (as exporter-toolkit does)
//! and the error is logged once per change. Whether the endpoint speaks TLS at all is fixed at
//! the start.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    hash::{BuildHasher as _, RandomState},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use anyhow::{Context as _, bail};
use rustls::{
    RootCertStore, ServerConfig, SupportedProtocolVersion,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;

/// The file as exporter-toolkit defines it. Every key of its format is known here, so that a key
/// iotwatch does not implement gets its own message rather than "unknown field".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    tls_server_config: Option<TlsModel>,
    http_server_config: Option<HttpModel>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsModel {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    client_allowed_sans: Option<serde_norway::Value>,
    cipher_suites: Option<serde_norway::Value>,
    prefer_server_cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpModel {
    http2: Option<bool>,
    headers: Option<serde_norway::Value>,
}

/// How a client's certificate is treated (exporter-toolkit's `client_auth_type`, Go's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// One reading of the file: what the server needs.
pub struct Loaded {
    /// None: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Files the reading depended on (the configuration file first), for the change check.
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("files", &self.files)
            .finish()
    }
}

/// Reads and checks the file; every error names the file and the key.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--web.config.file {}: cannot read it", path.display()))?;
    let f = |what: String| anyhow::anyhow!("--web.config.file {}: {what}", path.display());
    // A file of comments only is an empty configuration (plain HTTP, no users), as in Go.
    let empty = serde_norway::from_str::<serde_norway::Value>(&text).map_err(|e| f(e.to_string()))?.is_null();
    let model: FileModel =
        if empty { FileModel::default() } else { serde_norway::from_str(&text).map_err(|e| f(e.to_string()))? };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files = vec![path.to_path_buf()];
    let tls = match model.tls_server_config {
        Some(t) if t.is_enabled() => Some(Arc::new(t.server_config(dir, &mut files).map_err(|e| f(format!("{e:#}")))?)),
        Some(t) => {
            t.refuse_unsupported().map_err(|e| f(format!("{e:#}")))?;
            None
        }
        None => None,
    };
    if let Some(h) = model.http_server_config {
        if h.headers.is_some() {
            return Err(f("http_server_config.headers is not supported by iotwatch; remove it".to_owned()));
        }
        // http2: iotwatch serves HTTP/1.1 (all Prometheus needs) whatever it says.
        let _ = h.http2;
    }
    if model.rate_limit.is_some() {
        return Err(f(
            "rate_limit is not supported by iotwatch; remove it (the agent caps connections and times out slow clients itself)"
                .to_owned(),
        ));
    }
    let users = model.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        if user.contains(':') {
            return Err(f(format!(
                "basic_auth_users: the user name {user:?} has a ':', which basic auth cannot carry"
            )));
        }
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(f(format!(
                "basic_auth_users.{user}: not a bcrypt hash (like $2y$10$ and 53 more characters; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
            )));
        }
    }
    Ok(Loaded { tls, users, files })
}

impl TlsModel {
    /// exporter-toolkit's test: any of these keys turns TLS on.
    fn is_enabled(&self) -> bool {
        self.cert_file.is_some()
            || self.cert.is_some()
            || self.key_file.is_some()
            || self.key.is_some()
            || self.client_ca_file.is_some()
            || self.client_ca.is_some()
            || self.client_auth_type.is_some()
    }

    fn refuse_unsupported(&self) -> anyhow::Result<()> {
        let unsupported = [
            ("client_allowed_sans", self.client_allowed_sans.is_some()),
            ("cipher_suites", self.cipher_suites.is_some()),
            ("curve_preferences", self.curve_preferences.is_some()),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
            bail!(
                "tls_server_config.{key} is not supported by iotwatch (rustls offers only modern cipher suites and groups); remove it"
            );
        }
        // prefer_server_cipher_suites: rustls always prefers the server's order; nothing to do.
        let _ = self.prefer_server_cipher_suites;
        Ok(())
    }

    fn server_config(&self, dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<ServerConfig> {
        self.refuse_unsupported()?;
        let versions = self.versions()?;
        let cert_pem = pem_source("cert", &self.cert, "cert_file", &self.cert_file, dir, files)?
            .context("tls_server_config: cert_file (or cert) is missing")?;
        let key_pem = pem_source("key", &self.key, "key_file", &self.key_file, dir, files)?
            .context("tls_server_config: key_file (or key) is missing")?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem.1)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("tls_server_config.{}: not a PEM certificate: {e}", cert_pem.0))?;
        if certs.is_empty() {
            bail!("tls_server_config.{}: no PEM certificate in it", cert_pem.0);
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem.1)
            .map_err(|e| anyhow::anyhow!("tls_server_config.{}: no PEM private key in it: {e}", key_pem.0))?;
        let ca = pem_source("client_ca", &self.client_ca, "client_ca_file", &self.client_ca_file, dir, files)?;
        let auth = match self.client_auth_type.as_deref() {
            None | Some("" | "NoClientCert") => ClientAuth::NoClientCert,
            Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
            Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
            Some(t @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")) => bail!(
                "tls_server_config.client_auth_type: {t} accepts certificates nobody checked, which protects nothing; \
                 use RequireAndVerifyClientCert with client_ca_file"
            ),
            Some(t) => bail!(
                "tls_server_config.client_auth_type: {t:?} is not one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .context("tls_server_config: min_version/max_version")?;
        let builder = match (auth, ca) {
            (ClientAuth::NoClientCert, Some(_)) => bail!(
                "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert; set client_auth_type: RequireAndVerifyClientCert"
            ),
            (ClientAuth::NoClientCert, None) => builder.with_no_client_auth(),
            (_, None) => bail!("tls_server_config.client_auth_type: {auth:?} needs client_ca_file (or client_ca)"),
            (_, Some((key, pem))) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&pem) {
                    let c = c.map_err(|e| anyhow::anyhow!("tls_server_config.{key}: not a PEM certificate: {e}"))?;
                    roots.add(c).map_err(|e| anyhow::anyhow!("tls_server_config.{key}: {e}"))?;
                }
                if roots.is_empty() {
                    bail!("tls_server_config.{key}: no PEM certificate in it");
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if auth == ClientAuth::VerifyClientCertIfGiven {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|e| anyhow::anyhow!("tls_server_config.{key}: {e}"))?,
                )
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| anyhow::anyhow!("tls_server_config: the certificate and key do not make a pair: {e}"))?;
        // Prometheus speaks HTTP/1.1 (it offers h2 too; this server has only HTTP/1.1).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// min_version (default TLS12) to max_version (default TLS13). rustls has no TLS 1.0 or 1.1:
    /// a min_version of TLS10 or TLS11 serves 1.2 and 1.3, which is stricter than asked.
    fn versions(&self) -> anyhow::Result<Vec<&'static SupportedProtocolVersion>> {
        let parse = |key: &str, v: &Option<String>, default: u8| -> anyhow::Result<u8> {
            match v.as_deref() {
                None | Some("") => Ok(default),
                Some("TLS10") => Ok(10),
                Some("TLS11") => Ok(11),
                Some("TLS12") => Ok(12),
                Some("TLS13") => Ok(13),
                Some(o) => bail!("tls_server_config.{key}: {o:?} is not one of TLS10, TLS11, TLS12, TLS13"),
            }
        };
        let min = parse("min_version", &self.min_version, 12)?;
        let max = parse("max_version", &self.max_version, 13)?;
        if max < 12 {
            bail!("tls_server_config.max_version: iotwatch speaks TLS 1.2 and 1.3 only; TLS12 is the lowest maximum");
        }
        if min > max {
            bail!("tls_server_config: min_version is above max_version");
        }
        let mut v = Vec::new();
        if min <= 12 {
            v.push(&rustls::version::TLS12);
        }
        if max >= 13 {
            v.push(&rustls::version::TLS13);
        }
        Ok(v)
    }
}

/// PEM text given inline (`key`) or as a file (`file_key`, relative to `dir`), never both; with
/// the key it came from, for messages.
fn pem_source(
    key: &str,
    inline: &Option<String>,
    file_key: &str,
    file: &Option<PathBuf>,
    dir: &Path,
    files: &mut Vec<PathBuf>,
) -> anyhow::Result<Option<(String, Vec<u8>)>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("tls_server_config: {key} and {file_key} are both set; keep one"),
        (Some(text), None) => Ok(Some((key.to_owned(), text.as_bytes().to_vec()))),
        (None, Some(p)) => {
            let p = dir.join(p);
            files.push(p.clone());
            let bytes = std::fs::read(&p)
                .with_context(|| format!("tls_server_config.{file_key}: cannot read {}", p.display()))?;
            Ok(Some((format!("{file_key} ({})", p.display()), bytes)))
        }
        (None, None) => Ok(None),
    }
}

/// What identifies a file's content without reading it: changed, it is read again.
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| std::fs::metadata(f).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino())))
        .collect()
}

/// The file, read again when it or a file it names changes.
#[derive(Debug)]
pub struct WebConfig {
    path: PathBuf,
    tls: bool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    files: Vec<PathBuf>,
    stamp: Stamp,
    current: Result<Arc<Loaded>, String>,
}

impl WebConfig {
    /// Reads the file at the start: an error here stops the agent.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let loaded = load(path)?;
        let files = loaded.files.clone();
        Ok(Self {
            path: path.to_path_buf(),
            tls: loaded.tls.is_some(),
            state: Mutex::new(State { stamp: stamp(&files), files, current: Ok(Arc::new(loaded)) }),
        })
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration in force: read again if a file changed. An error (logged once per
    /// change) means the request or connection is refused.
    pub fn current(&self) -> Result<Arc<Loaded>, String> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = stamp(&s.files);
        if now != s.stamp {
            let mut files = vec![self.path.clone()];
            s.current = match load(&self.path) {
                Ok(l) if l.tls.is_some() != self.tls => {
                    files = l.files.clone();
                    Err(format!(
                        "--web.config.file {}: TLS was {} at the start and cannot be turned {} without a restart",
                        self.path.display(),
                        if self.tls { "on" } else { "off" },
                        if self.tls { "off" } else { "on" }
                    ))
                }
                Ok(l) => {
                    files = l.files.clone();
                    tracing::info!("--web.config.file {} read again after a change", self.path.display());
                    Ok(Arc::new(l))
                }
                // Keep watching what the last good reading named too: fixing a certificate
                // must be seen even while the configuration file itself stays broken.
                Err(e) => {
                    if let Ok(prev) = &s.current {
                        files.extend(prev.files.iter().skip(1).cloned());
                    } else {
                        files.extend(s.files.iter().skip(1).cloned());
                    }
                    Err(format!("{e:#}"))
                }
            };
            if let Err(e) = &s.current {
                tracing::error!("{e}; connections are refused until it is fixed");
            }
            s.stamp = stamp(&files);
            s.files = files;
        }
        s.current.clone()
    }
}

/// Checks basic auth credentials against the users' bcrypt hashes. A bcrypt check costs tens of
/// milliseconds by design, so successes are remembered (as exporter-toolkit does) under a keyed
/// hash of user, password and bcrypt hash, never the password itself; at most 2 checks run at
/// once, on blocking threads, so a flood of wrong passwords queues instead of taking every CPU.
#[derive(Debug)]
pub struct Checker {
    keys: (RandomState, RandomState),
    good: Mutex<HashMap<u128, ()>>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// Successes remembered; past this the memory is cleared.
const GOOD_CACHE: usize = 64;
/// bcrypt checks that may run at once.
const CHECKS_AT_ONCE: usize = 2;
/// A hash of cost 10 to check against when the user does not exist, so that an unknown user
/// costs the same time as a wrong password (no user enumeration by timing).
const DECOY_HASH: &str = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";

impl Default for Checker {
    fn default() -> Self {
        Self {
            keys: (RandomState::new(), RandomState::new()),
            good: Mutex::new(HashMap::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(CHECKS_AT_ONCE)),
        }
    }
}

impl Checker {
    fn key(&self, user: &str, password: &str, hash: &str) -> u128 {
        let mut s = String::with_capacity(user.len() + password.len() + hash.len() + 2);
        let _ = write!(s, "{user}\0{password}\0{hash}");
        (u128::from(self.keys.0.hash_one(&s)) << 64) | u128::from(self.keys.1.hash_one(&s))
    }

    /// Whether `user` and `password` match `users`.
    pub async fn check(&self, users: &BTreeMap<String, String>, user: &str, password: &str) -> bool {
        let (hash, known) = match users.get(user) {
            Some(h) => (h.clone(), true),
            None => (DECOY_HASH.to_owned(), false),
        };
        let key = self.key(user, password, &hash);
        if known && self.good.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&key) {
            return true;
        }
        let Ok(_permit) = self.permits.clone().acquire_owned().await else { return false };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok && known {
            let mut good = self.good.lock().unwrap_or_else(PoisonError::into_inner);
            if good.len() >= GOOD_CACHE {
                good.clear();
            }
            good.insert(key, ());
        }
        ok && known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn err(dir: &Path, yaml: &str) -> String {
        let p = write(dir, "web.yml", yaml);
        format!("{:#}", load(&p).expect_err(yaml))
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let dir = std::env::temp_dir().join(format!("iotwatch-webcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cases = [
            ("tls_server_config:\n  cert_file: nothere.pem\n  key_file: k.pem\n", "tls_server_config.cert_file"),
            ("tls_server_config:\n  key_file: k.pem\n", "cert_file (or cert) is missing"),
            ("tls_server_config:\n  cert_fil: x\n", "unknown field `cert_fil`"),
            ("basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice: not a bcrypt hash"),
            (
                "tls_server_config:\n  client_allowed_sans: [a]\n",
                "tls_server_config.client_allowed_sans is not supported",
            ),
            ("rate_limit:\n  interval: 1s\n  burst: 5\n", "rate_limit is not supported"),
            ("nonsense: 1\n", "unknown field `nonsense`"),
            ("tls_server_config: [\n", "did not find expected"),
        ];
        for (yaml, want) in cases {
            let e = err(&dir, yaml);
            assert!(e.contains("--web.config.file") && e.contains("web.yml"), "names the file: {e}");
            assert!(e.contains(want), "{yaml:?}: {e} should say {want:?}");
        }
        let ok = write(&dir, "ok.yml", "# nothing but a comment\n");
        let l = load(&ok).expect("an empty file is an empty configuration");
        assert!(l.tls.is_none() && l.users.is_empty());
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let users = write(&dir, "users.yml", &format!("basic_auth_users:\n  alice: {hash}\n"));
        assert_eq!(load(&users).expect("users").users.len(), 1);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn tls_versions() {
        let t = |min: Option<&str>, max: Option<&str>| {
            TlsModel { min_version: min.map(str::to_owned), max_version: max.map(str::to_owned), ..Default::default() }
                .versions()
                .map(|v| v.iter().map(|v| format!("{:?}", v.version)).collect::<Vec<_>>())
        };
        assert_eq!(t(None, None).expect("defaults"), ["TLSv1_2", "TLSv1_3"]);
        assert_eq!(t(Some("TLS13"), None).expect("1.3 only"), ["TLSv1_3"]);
        assert_eq!(t(Some("TLS10"), None).expect("1.0 asked: 1.2 is the floor"), ["TLSv1_2", "TLSv1_3"]);
        assert_eq!(t(None, Some("TLS12")).expect("1.2 only"), ["TLSv1_2"]);
        assert!(t(Some("TLS13"), Some("TLS12")).is_err());
        assert!(t(Some("TLS14"), None).expect_err("unknown").to_string().contains("min_version"));
        assert!(t(None, Some("TLS11")).is_err());
    }

    #[tokio::test]
    async fn checks_passwords_and_remembers_successes() {
        let hash = bcrypt::hash("right", 4).expect("hash");
        let users = BTreeMap::from([("alice".to_owned(), hash)]);
        let c = Checker::default();
        assert!(c.check(&users, "alice", "right").await);
        assert!(c.check(&users, "alice", "right").await, "again, from memory");
        assert!(!c.check(&users, "alice", "wrong").await);
        assert!(!c.check(&users, "bob", "right").await);
        assert_eq!(c.good.lock().expect("lock").len(), 1, "only the success is remembered");
    }
}
