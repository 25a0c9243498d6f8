//! TLS to PostgreSQL through rustls, with libpq's `sslmode` meanings, for every connection the
//! store opens: the pool's, the `LISTEN` connection and the migration's.
//!
//! tokio-postgres knows `sslmode` `disable`, `prefer` and `require`, and leaves the handshake
//! and the certificate check to a [`MakeTlsConnect`]. The URL's `sslmode` and `sslrootcert` are
//! taken out of the URL before tokio-postgres reads it (`password::take_params`); the mode is
//! given to tokio-postgres as the nearest of its three (both `verify-*` are `require`), and
//! what is checked of the certificate is decided here, as libpq decides it:
//!
//! | `sslmode`          | TLS                       | certificate checked                  |
//! |--------------------|---------------------------|--------------------------------------|
//! | `disable`          | never                     | -                                    |
//! | `prefer` (default) | when the server offers it | chain, if a root was given; else not |
//! | `require`          | always                    | chain, if a root was given; else not |
//! | `verify-ca`        | always                    | chain                                |
//! | `verify-full`      | always                    | chain and host name                  |
//!
//! "A root was given": `sslrootcert` (a PEM file of CAs) or
//! [`PostgresStoreBuilder::add_root_certificate`](super::PostgresStoreBuilder::add_root_certificate).
//! Without one, `verify-ca` and `verify-full` trust the Mozilla (webpki) roots;
//! `sslrootcert=system` names them explicitly and, as in libpq 16, requires `verify-full`.
//! The handshake's own signatures are always checked; only what the certificate proves is
//! left out in the modes that check nothing.
//!
//! Channel binding: each session offers `tls-server-end-point` (RFC 5929: the hash of the
//! server's certificate), so that SCRAM authentication (`SCRAM-SHA-256-PLUS`) is bound to this
//! TLS session and a machine in the middle cannot relay it, whatever the `sslmode`. A
//! certificate whose signature names no hash RFC 5929 can use (Ed25519, RSA-PSS) offers no
//! binding, and SCRAM runs without it (unless the URL says `channel_binding=require`).

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::dispatch::Certificate;
use crate::error::{Error, Result};

/// libpq's `sslmode` values, but `allow` (plain first, TLS on refusal), which tokio-postgres
/// cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS settings a database URL gives: its `sslmode` and `sslrootcert`.
#[derive(Debug, Clone)]
pub(super) struct UrlTls {
    mode: Mode,
    root_file: Option<PathBuf>,
    /// `sslrootcert=system`: the Mozilla (webpki) roots, named explicitly.
    system_roots: bool,
}

impl UrlTls {
    /// The settings of a URL's `sslmode` (libpq's `prefer` when absent) and `sslrootcert`.
    /// As libpq 16, `sslrootcert=system` means the system's roots (here the Mozilla roots
    /// rustls is given), makes `verify-full` the default and refuses a weaker mode: trusting
    /// every public authority is only safe with the host name checked.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (`database URL`) for an `sslmode` libpq does not know, or
    /// `allow`, or weaker than `verify-full` with `sslrootcert=system`.
    pub(super) fn new(sslmode: Option<&str>, sslrootcert: Option<&str>) -> Result<UrlTls> {
        let system_roots = sslrootcert == Some("system");
        let default = if system_roots {
            "verify-full"
        } else {
            "prefer"
        };
        let mode = match sslmode.unwrap_or(default) {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            "allow" => {
                return Err(Error::config(
                    "database URL",
                    "sslmode allow is not supported; use prefer, or disable",
                ));
            }
            _ => {
                return Err(Error::config(
                    "database URL",
                    "sslmode must be disable, prefer, require, verify-ca or verify-full",
                ));
            }
        };
        if system_roots && mode != Mode::VerifyFull {
            return Err(Error::config(
                "database URL",
                "sslrootcert=system needs sslmode verify-full",
            ));
        }
        let root_file = sslrootcert
            .filter(|f| !f.is_empty() && !system_roots)
            .map(PathBuf::from);
        Ok(UrlTls {
            mode,
            root_file,
            system_roots,
        })
    }

    /// The mode as tokio-postgres knows it: whether TLS is skipped, tried or insisted on.
    pub(super) fn wire_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector for every connection of the store: the URL's settings with `extra_roots`
    /// (the builder's) trusted besides the `sslrootcert` file's.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (`sslrootcert`) when the file cannot be read, or holds no
    /// certificate that parses as a trust anchor.
    pub(super) fn connector(&self, extra_roots: &[Certificate]) -> Result<MakeRustls> {
        let mut given = RootCertStore::empty();
        if let Some(path) = &self.root_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::config(
                    "sslrootcert",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let certificates = Certificate::from_pem_bundle(&pem).map_err(|_| {
                Error::config(
                    "sslrootcert",
                    format!("{} holds no usable CA certificate", path.display()),
                )
            })?;
            for certificate in &certificates {
                add(&mut given, certificate);
            }
        }
        for certificate in extra_roots {
            add(&mut given, certificate);
        }
        if self.system_roots {
            given.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        let roots = match self.mode {
            Mode::Disable => None,
            // libpq: with a root certificate, `prefer` and `require` check the chain too.
            Mode::Prefer | Mode::Require => (!given.is_empty()).then_some(given),
            Mode::VerifyCa | Mode::VerifyFull if given.is_empty() => {
                Some(webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect())
            }
            Mode::VerifyCa | Mode::VerifyFull => Some(given),
        };
        let builder = crate::dispatch::tls::client_builder();
        let verifier = Verifier {
            roots: roots.map(Arc::new),
            check_name: self.mode == Mode::VerifyFull,
            algorithms: builder.crypto_provider().signature_verification_algorithms,
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(MakeRustls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            check_name: self.mode == Mode::VerifyFull,
        })
    }
}

fn add(roots: &mut RootCertStore, certificate: &Certificate) {
    roots
        .add(CertificateDer::from(certificate.der().to_vec()))
        .expect("a Certificate was checked when it was made");
}

/// The certificate check of one mode (see the module's table).
#[derive(Debug)]
struct Verifier {
    /// The trust anchors the chain must reach; `None`: the chain is not checked.
    roots: Option<Arc<RootCertStore>>,
    /// Whether the certificate must name the host connected to (`verify-full`).
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
            if self.check_name {
                rustls::client::verify_server_name(&certificate, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Makes each connection's TLS session, for the host it connects to.
#[derive(Clone)]
pub(super) struct MakeRustls {
    connector: tokio_rustls::TlsConnector,
    check_name: bool,
}

impl fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeRustls")
            .field("check_name", &self.check_name)
            .finish_non_exhaustive()
    }
}

/// Why a TLS session could not be made.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = BoxError;

    fn make_tls_connect(&mut self, host: &str) -> std::result::Result<RustlsConnect, BoxError> {
        let name = match ServerName::try_from(host.to_owned()) {
            Ok(name) => name,
            Err(_) if self.check_name => {
                return Err(
                    "sslmode verify-full needs a host name or IP address to check the \
                     certificate against"
                        .into(),
                );
            }
            // No name to check (a `hostaddr` without `host`): an address sends no SNI.
            Err(_) => ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into()),
        };
        Ok(RustlsConnect {
            connector: self.connector.clone(),
            name,
        })
    }
}

/// One connection's handshake.
pub(super) struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<RustlsStream<S>, BoxError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            match self.connector.connect(self.name, stream).await {
                Ok(stream) => Ok(RustlsStream(stream)),
                Err(e) => Err(handshake_error(e)),
            }
        })
    }
}

/// tokio-rustls reports a refused certificate as an I/O error around rustls' error: that
/// error itself, so that it reads as what it is and is not taken for a broken connection
/// (which the store tries again on a fresh one; a wrong certificate stays wrong).
fn handshake_error(e: io::Error) -> BoxError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Box::new(tls.clone()),
        None => Box::new(e),
    }
}

/// A TLS session over a connection to the database.
pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|certificate| server_end_point(certificate))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929's `tls-server-end-point` of a certificate: its hash with the hash function of its
/// own signature algorithm, SHA-256 for MD5 and SHA-1 (as PostgreSQL computes it on its side).
/// `None` when the algorithm names no such hash, or the certificate cannot be read.
fn server_end_point(certificate: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    /// The DER contents of the signature algorithms' object identifiers, by hash.
    const SHA256: [&[u8]; 6] = [
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x04", // md5WithRSAEncryption
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x05", // sha1WithRSAEncryption
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b", // sha256WithRSAEncryption
        b"\x2a\x86\x48\xce\x3d\x04\x01",         // ecdsa-with-SHA1
        b"\x2a\x86\x48\xce\x3d\x04\x03\x02",     // ecdsa-with-SHA256
        b"\x2b\x0e\x03\x02\x1d",                 // sha1WithRSASignature (OIW)
    ];
    const SHA384: [&[u8]; 2] = [
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0c", // sha384WithRSAEncryption
        b"\x2a\x86\x48\xce\x3d\x04\x03\x03",     // ecdsa-with-SHA384
    ];
    const SHA512: [&[u8]; 2] = [
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0d", // sha512WithRSAEncryption
        b"\x2a\x86\x48\xce\x3d\x04\x03\x04",     // ecdsa-with-SHA512
    ];
    let algorithm = signature_algorithm(certificate)?;
    if SHA256.contains(&algorithm) {
        Some(sha2::Sha256::digest(certificate).to_vec())
    } else if SHA384.contains(&algorithm) {
        Some(sha2::Sha384::digest(certificate).to_vec())
    } else if SHA512.contains(&algorithm) {
        Some(sha2::Sha512::digest(certificate).to_vec())
    } else {
        None
    }
}

/// The object identifier (its DER contents) of a certificate's `signatureAlgorithm`:
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, ... }`,
/// `AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, ... }`.
fn signature_algorithm(certificate: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (certificate, _) = der_element(certificate, SEQUENCE)?;
    let (_, rest) = der_element(certificate, SEQUENCE)?;
    let (identifier, _) = der_element(rest, SEQUENCE)?;
    let (algorithm, _) = der_element(identifier, OID)?;
    Some(algorithm)
}

/// The contents of the DER element at the start of `der` if its tag is `tag`, and what
/// follows it.
fn der_element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = der.split_first()?;
    if first != tag {
        return None;
    }
    let (&length, mut rest) = rest.split_first()?;
    let length = if length < 0x80 {
        usize::from(length)
    } else {
        let octets = usize::from(length & 0x7f);
        if octets == 0 || octets > std::mem::size_of::<usize>() || rest.len() < octets {
            return None;
        }
        let (bytes, after) = rest.split_at(octets);
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_reads_as_libpq_and_tells_tokio_postgres_the_nearest() {
        for (value, mode, wire) in [
            (None, Mode::Prefer, SslMode::Prefer),
            (Some("disable"), Mode::Disable, SslMode::Disable),
            (Some("prefer"), Mode::Prefer, SslMode::Prefer),
            (Some("require"), Mode::Require, SslMode::Require),
            (Some("verify-ca"), Mode::VerifyCa, SslMode::Require),
            (Some("verify-full"), Mode::VerifyFull, SslMode::Require),
        ] {
            let tls = UrlTls::new(value, None).unwrap();
            assert_eq!(tls.mode, mode, "{value:?}");
            assert_eq!(tls.wire_mode(), wire, "{value:?}");
            tls.connector(&[]).unwrap();
        }
        for bad in ["allow", "VERIFY-FULL", "", "s3cret"] {
            let err = UrlTls::new(Some(bad), None).unwrap_err();
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
        // libpq 16's `sslrootcert=system`: verify-full by default, nothing weaker.
        let system = UrlTls::new(None, Some("system")).unwrap();
        assert_eq!(system.mode, Mode::VerifyFull);
        assert!(system.system_roots && system.root_file.is_none());
        system.connector(&[]).unwrap();
        for weaker in ["disable", "prefer", "require", "verify-ca"] {
            assert!(
                UrlTls::new(Some(weaker), Some("system")).is_err(),
                "{weaker}"
            );
        }
    }

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        use sha2::Digest;
        let signed_with = |algorithm: &'static rcgen::SignatureAlgorithm| {
            let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let p256 = signed_with(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            server_end_point(&p256),
            Some(sha2::Sha256::digest(&p256).to_vec())
        );
        let p384 = signed_with(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            server_end_point(&p384),
            Some(sha2::Sha384::digest(&p384).to_vec())
        );
        // Ed25519 names no hash: no binding, as PostgreSQL has none to offer either.
        assert_eq!(server_end_point(&signed_with(&rcgen::PKCS_ED25519)), None);
        for garbage in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"not der"] {
            assert_eq!(server_end_point(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn sslrootcert_must_be_a_readable_pem_of_cas() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        for path in [&missing, &garbage] {
            let tls = UrlTls::new(Some("verify-full"), path.to_str()).unwrap();
            assert!(
                matches!(
                    tls.connector(&[]),
                    Err(Error::InvalidConfig {
                        field: "sslrootcert",
                        ..
                    })
                ),
                "{path:?}"
            );
        }
    }
}
