//! TLS for both backends: one rustls configuration (the process's crypto provider, its safe
//! default protocol versions, the Mozilla roots and any roots the dialer adds), and
//! [`Certificate`], the crate's own type for an added root, so rustls stays out of the public
//! API.
//!
//! The crypto provider is chosen as rustls asks a library to choose it: the process's default
//! ([`rustls::crypto::CryptoProvider::install_default`], which the dialer may call at start-up,
//! for example with aws-lc-rs and its post-quantum key exchange), or else the one rustls's
//! crate features name, *ring* with this crate's features. A build in which some other crate
//! enables a second provider (aws-lc-rs and *ring* together) must install one at start-up:
//! rustls cannot pick, and panics naming `install_default`.

use std::fmt;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// A root certificate to trust besides the Mozilla (webpki) roots: the certificate authority of
/// an on-premises receiver whose certificate no public authority signed.
///
/// Add one to a dispatcher with [`HyperDispatcherBuilder::add_root_certificate`] or
/// [`UreqDispatcherBuilder::add_root_certificate`]. Certificates are still fully validated
/// (chain, host name, validity period); the added authority is simply one more that may sign.
/// The PostgreSQL store takes the authority of its database's certificate the same way
/// (`PostgresStoreBuilder::add_root_certificate`, feature `postgres`).
///
/// [`HyperDispatcherBuilder::add_root_certificate`]: crate::dispatch::hyper::HyperDispatcherBuilder::add_root_certificate
/// [`UreqDispatcherBuilder::add_root_certificate`]: crate::dispatch::ureq::UreqDispatcherBuilder::add_root_certificate
///
/// # Examples
///
/// ```no_run
/// use call_result_webhook::{UreqDispatcher, UrlPolicy, dispatch::Certificate};
///
/// let pem = std::fs::read("/etc/dialer/acme-ca.pem")?;
/// let mut builder = UreqDispatcher::builder()
///     .policy(UrlPolicy::new().allow_net("10.20.0.0/16".parse()?));
/// for ca in Certificate::from_pem_bundle(&pem)? {
///     builder = builder.add_root_certificate(ca);
/// }
/// let dispatcher = builder.build();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    der: CertificateDer<'static>,
}

impl Certificate {
    /// One certificate in DER form.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (field `root_certificate`) unless it parses as an X.509
    /// certificate usable as a trust anchor.
    pub fn from_der(der: &[u8]) -> Result<Certificate> {
        let der = CertificateDer::from(der.to_vec());
        rustls::RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| Error::config("root_certificate", e))?;
        Ok(Certificate { der })
    }

    /// The first `CERTIFICATE` block of a PEM text.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (field `root_certificate`) when the PEM is malformed, holds no
    /// `CERTIFICATE` block, or a block does not parse as a trust anchor.
    pub fn from_pem(pem: &[u8]) -> Result<Certificate> {
        Certificate::from_pem_bundle(pem)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::config("root_certificate", "no CERTIFICATE block in the PEM"))
    }

    /// Every `CERTIFICATE` block of a PEM text (a CA bundle), in order; other blocks are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] (field `root_certificate`) when the PEM is malformed, holds no
    /// `CERTIFICATE` block, or one does not parse as a trust anchor.
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Vec<Certificate>> {
        let mut certificates = Vec::new();
        for der in CertificateDer::pem_slice_iter(pem) {
            let der = der.map_err(|_| Error::config("root_certificate", "the PEM is malformed"))?;
            certificates.push(Certificate::from_der(&der)?);
        }
        if certificates.is_empty() {
            return Err(Error::config(
                "root_certificate",
                "no CERTIFICATE block in the PEM",
            ));
        }
        Ok(certificates)
    }

    /// The certificate in DER form.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("der_len", &self.der.len())
            .finish()
    }
}

/// The start of every TLS client configuration the crate makes, the webhook backends' and the
/// PostgreSQL store's: the process's crypto provider (see the module's docs) and rustls's safe
/// default protocol versions (TLS 1.2 and 1.3).
pub(crate) fn client_builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>
{
    rustls::ClientConfig::builder()
}

/// The client configuration both backends use: [`client_builder`], trusting the webpki roots
/// and `extra_roots`.
#[cfg(any(feature = "hyper", feature = "ureq"))]
pub(crate) fn client_config(extra_roots: &[Certificate]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots: rustls::RootCertStore = webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect();
    for root in extra_roots {
        roots
            .add(root.der.clone())
            .expect("a Certificate was checked when it was made");
    }
    let config = client_builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "hyper", feature = "ureq"))]
    #[test]
    fn the_configuration_uses_the_processs_crypto_provider() {
        let config = client_config(&[]);
        let process = rustls::crypto::CryptoProvider::get_default()
            .expect("building a configuration settles the process's provider");
        assert!(std::sync::Arc::ptr_eq(config.crypto_provider(), process));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        for bad in [
            &b""[..],
            b"not a certificate",
            &[0x30, 0x03, 0x02, 0x01, 0x00],
        ] {
            assert!(
                matches!(
                    Certificate::from_der(bad),
                    Err(Error::InvalidConfig {
                        field: "root_certificate",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(Certificate::from_pem(b"no pem here").is_err());
        assert!(Certificate::from_pem_bundle(b"").is_err());
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(Certificate::from_pem(broken).is_err());
    }

    #[test]
    fn a_ca_reads_the_same_from_der_and_pem() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let from_der = Certificate::from_der(ca.der()).unwrap();
        let bundle = format!("{}{}", key.serialize_pem(), ca.pem());
        assert_eq!(Certificate::from_pem(bundle.as_bytes()).unwrap(), from_der);
        let two = format!("{}{}", ca.pem(), ca.pem());
        assert_eq!(
            Certificate::from_pem_bundle(two.as_bytes()).unwrap().len(),
            2
        );
        assert_eq!(from_der.der(), &ca.der()[..]);
        assert!(format!("{from_der:?}").starts_with("Certificate { der_len: "));
        #[cfg(any(feature = "hyper", feature = "ureq"))]
        let _ = client_config(&[from_der]);
    }
}
