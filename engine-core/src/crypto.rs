//! The DTLS provider ringcast hands str0m: one validated dimpl configuration shared by every
//! call, instead of one per call.
//!
//! str0m's default aws-lc-rs provider builds a fresh `dimpl::Config` in every `Rtc::build`, and
//! `dimpl::Config::build` validates the crypto provider by running a test ECDH for every key
//! exchange group (X25519, P-256, P-384): about 1.1 ms of CPU per call on the project machine
//! (str0m-notes.md §5, §7). [`CallCrypto`] builds that configuration once and only creates the
//! per-call DTLS state in `new_dtls`.
//!
//! It also exposes two knobs str0m does not: the initial DTLS retransmission timeout (RFC 6347
//! §4.2.4.1 suggests 1 s; a lost final flight then costs a second of audio) and, for the
//! simulator only, a fixed seed for dimpl's RNG so retransmission jitter repeats.
//!
//! str0m's `CryptoProvider` holds `&'static` references, so each [`CallCrypto::provider`]
//! leaks one small provider object. Build one per engine (or per simulated world), not per call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// RFC 6347 §4.2.4.1 suggests an initial retransmission timer of 1 s; libwebrtc starts at
/// 50 ms for DTLS-SRTP because the peer is known reachable once ICE has succeeded. We use
/// 100 ms: a lost handshake flight then costs 5 audio frames, not 50.
pub const DEFAULT_FLIGHT_START_RTO: Duration = Duration::from_millis(100);

/// Retransmissions per flight before the handshake fails. dimpl's default (4) suits a 1 s
/// start; from 100 ms, 8 doublings still give up only after about 25 s, so a burst of
/// handshakes on a loaded machine does not fail early.
pub const DEFAULT_FLIGHT_RETRIES: usize = 8;

/// The MTU str0m passes by default (`DATAGRAM_MTU_TARGET`); configs for it are prebuilt.
const DEFAULT_MTU: usize = str0m::DATAGRAM_MTU_TARGET;

/// Options for [`CallCrypto`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoOptions {
    /// Initial DTLS flight retransmission timeout.
    pub flight_start_rto: Duration,
    /// Fixed seed for dimpl's RNG. **Simulator only**: every DTLS instance then draws the same
    /// random stream. `None` (the default) seeds from the OS.
    pub dangerous_rng_seed: Option<u64>,
}

impl Default for CryptoOptions {
    fn default() -> Self {
        Self {
            flight_start_rto: DEFAULT_FLIGHT_START_RTO,
            dangerous_rng_seed: None,
        }
    }
}

/// Errors building the DTLS configuration.
#[derive(Debug, thiserror::Error)]
#[error("dtls config: {reason}")]
pub struct CryptoConfigError {
    reason: String,
}

/// A DTLS provider with a prebuilt, shared dimpl configuration.
#[derive(Debug)]
pub struct CallCrypto {
    options: CryptoOptions,
    config: Arc<dimpl::Config>,
}

impl CallCrypto {
    /// Builds and validates the dimpl configuration once.
    pub fn new(options: CryptoOptions) -> Result<Self, CryptoConfigError> {
        let config = Self::build_config(&options, DEFAULT_MTU)?;
        Ok(Self { options, config })
    }

    fn build_config(
        options: &CryptoOptions,
        mtu: usize,
    ) -> Result<Arc<dimpl::Config>, CryptoConfigError> {
        // ICE has proven return routability before DTLS starts, so cookies add a round trip
        // for nothing (str0m's provider does the same).
        let mut builder = dimpl::Config::builder()
            .with_crypto_provider(str0m_aws_lc_rs::dimpl_crypto_provider())
            .use_server_cookie(false)
            .mtu(mtu)
            .flight_start_rto(options.flight_start_rto)
            .flight_retries(DEFAULT_FLIGHT_RETRIES);
        if let Some(seed) = options.dangerous_rng_seed {
            builder = builder.dangerously_set_rng_seed(seed);
        }
        builder
            .build()
            .map(Arc::new)
            .map_err(|e| CryptoConfigError {
                reason: e.to_string(),
            })
    }

    /// A str0m `CryptoProvider` using this DTLS provider and str0m's aws-lc-rs SRTP/hash
    /// providers. Leaks the provider object (see the module docs).
    pub fn provider(self) -> Arc<CryptoProvider> {
        let dtls: &'static Self = Box::leak(Box::new(self));
        let mut provider = str0m::crypto::from_feature_flags();
        provider.dtls_provider = dtls;
        Arc::new(provider)
    }
}

impl DtlsProvider for CallCrypto {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        dimpl::certificate::generate_self_signed_certificate()
            .ok()
            .map(|cert| DtlsCert {
                certificate: cert.certificate,
                private_key: cert.private_key,
            })
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = match mtu {
            Some(m) if m != DEFAULT_MTU => Self::build_config(&self.options, m)
                .map_err(|e| CryptoError::Other(e.to_string()))?,
            _ => self.config.clone(),
        };
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported dtls version {other}"
                )));
            }
        };
        Ok(Box::new(Instance { dtls }))
    }
}

/// One call's DTLS state; forwards to dimpl.
struct Instance {
    dtls: dimpl::Dtls,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.dtls.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.dtls.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.dtls.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.dtls.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.dtls.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.dtls.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.dtls.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.dtls.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.dtls.close()
    }
}

/// A fresh self-signed certificate (OS randomness: call it from the runtime, not the core's
/// state machines).
pub fn generate_certificate() -> Option<DtlsCert> {
    dimpl::certificate::generate_self_signed_certificate()
        .ok()
        .map(|cert| DtlsCert {
            certificate: cert.certificate,
            private_key: cert.private_key,
        })
}
