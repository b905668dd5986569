//! Whom a provider's TLS certificate may come from, and certificate errors
//! in plain words.
//!
//! A provider connection trusts the Mozilla web roots compiled in
//! (`webpki-root-certs`), the box's system CA store (read once per process
//! through `rustls-native-certs`, which honours `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` like OpenSSL and curl) and, per provider, the PEM bundle
//! of `ca=FILE`. A private CA installed with `update-ca-certificates`
//! therefore works as it does for curl.
//!
//! It must not open connections; `fetch.rs` hands the roots to ureq.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Why a provider's `ca=FILE` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("ca={}: cannot read it", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ca={}: not a PEM bundle", .path.display())]
    NotPem {
        path: PathBuf,
        #[source]
        source: ureq::Error,
    },
    #[error("ca={}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)", .path.display())]
    NoCertificate { path: PathBuf },
}

/// The roots one provider's connections trust.
#[derive(Clone)]
pub struct TrustRoots {
    certs: Arc<Vec<Certificate<'static>>>,
    ca_file: Option<PathBuf>,
}

impl fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TrustRoots({} certificates, ca={:?})",
            self.certs.len(),
            self.ca_file
        )
    }
}

impl Default for TrustRoots {
    /// Web roots and the system store, no extra bundle.
    fn default() -> Self {
        TrustRoots {
            certs: Arc::new(base_roots().to_vec()),
            ca_file: None,
        }
    }
}

/// The web roots plus the system store, loaded once.
fn base_roots() -> &'static [Certificate<'static>] {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            crate::log::warn(&format!("system CA store: {e}"));
        }
        let n = native.certs.len();
        certs.extend(
            native
                .certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned()),
        );
        crate::log::log(
            crate::log::Level::Debug,
            "TLS trust roots loaded",
            &[("system", &n), ("total", &certs.len())],
        );
        certs
    })
}

impl TrustRoots {
    /// The base roots plus every certificate in the PEM file `ca`, which
    /// must hold at least one.
    pub fn with_ca_file(ca: Option<&Path>) -> Result<TrustRoots, CaError> {
        let Some(ca) = ca else {
            return Ok(TrustRoots::default());
        };
        let path = || ca.to_owned();
        let pem = std::fs::read(ca).map_err(|source| CaError::Read {
            path: path(),
            source,
        })?;
        let mut certs = base_roots().to_vec();
        let mut found = 0;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(c)) => {
                    certs.push(c);
                    found += 1;
                }
                Ok(_) => {}
                Err(source) => {
                    return Err(CaError::NotPem {
                        path: path(),
                        source,
                    })
                }
            }
        }
        if found == 0 {
            return Err(CaError::NoCertificate { path: path() });
        }
        Ok(TrustRoots {
            certs: Arc::new(certs),
            ca_file: Some(ca.to_owned()),
        })
    }

    /// The ureq TLS configuration trusting these roots.
    pub fn tls_config(&self) -> TlsConfig {
        TlsConfig::builder()
            .root_certs(RootCerts::Specific(self.certs.clone()))
            .build()
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }
}

/// A plain-words explanation of a certificate the provider presented and
/// planbox did not accept, or `None` when `err` is not about that.
/// `server` names the host and port, `ca_file` the provider's `ca=`.
pub fn explain(err: &ureq::Error, server: &str, ca_file: Option<&Path>) -> Option<String> {
    let rustls_err = match err {
        ureq::Error::Rustls(e) => e,
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    let rustls::Error::InvalidCertificate(cert) = rustls_err else {
        return None;
    };
    use rustls::CertificateError as C;
    let trusted = match ca_file {
        Some(f) => format!("the web roots, the system CA store or {}", f.display()),
        None => "the web roots or the system CA store".into(),
    };
    let fix = "install the issuing CA in the system store (copy it to \
               /usr/local/share/ca-certificates/ and run update-ca-certificates) \
               or give this provider ca=FILE with the CA's PEM";
    Some(match cert {
        C::UnknownIssuer => format!(
            "TLS: the certificate that {server} presented was not issued by a CA this box \
             trusts ({trusted}); {fix}"
        ),
        C::BadSignature | C::BadEncoding => format!(
            "TLS: the certificate that {server} presented is damaged or badly signed ({cert:?})"
        ),
        C::Expired | C::ExpiredContext { .. } => {
            format!("TLS: the certificate that {server} presented has expired; renew it on the provider")
        }
        C::NotValidYet | C::NotValidYetContext { .. } => format!(
            "TLS: the certificate that {server} presented is not valid yet; check the clocks of both machines"
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "TLS: the certificate that {server} presented is not valid for that name; \
             use the name the certificate was issued for in the URL"
        ),
        C::Revoked => format!("TLS: the certificate that {server} presented was revoked"),
        other => format!("TLS: the certificate that {server} presented was not accepted ({other:?})"),
    })
}
