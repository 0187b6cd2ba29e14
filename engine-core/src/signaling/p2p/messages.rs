//! The JSON control messages of 1:1 calls, protocol versions 7.0.0-9.0.0 (tgcalls
//! `InstanceV2Impl`; shapes from tgcalls/v2/Signaling.cpp, branch `development`, and ntgcalls
//! ntgcalls/src/signaling/messages/*.cpp; telegram-signaling.md §4.7). One message per
//! [`super::EncryptedChannel`] message, discriminated by `"@type"`:
//!
//! - [`InitialSetup`]: ICE ufrag/pwd and DTLS fingerprints. The caller sends it first (setup
//!   `actpass`), the callee answers with its own (setup `passive`) once it has the caller's.
//! - [`Candidates`]: trickled ICE candidates as SDP `candidate:` lines; apply them only after the
//!   remote [`InitialSetup`].
//! - [`NegotiateChannels`]: media contents (SSRCs, codecs, RTP header extensions) offered and
//!   answered under one `exchangeId`.
//! - [`MediaState`]: mute, battery, video and screencast state.
//!
//! Unknown `@type`s parse to [`SignalingMessage::Unknown`], which the call ignores (tgcalls
//! drops them too). Every other problem is a [`SignalingError`] naming the JSON path, as in
//! [`super::super::group`].
//!
//! Stricter than tgcalls where a lenient parse would hurt: [`InitialSetup`] needs at least one
//! fingerprint (tgcalls then runs DTLS without checking the peer's certificate) and ICE
//! credentials within RFC 8445; SSRCs, ids and enumerations must be in range instead of
//! silently becoming 0 or a default. Numbers may be JSON numbers or decimal strings; tgcalls
//! emits SSRCs and `exchangeId` as strings and everything else as numbers, and so does
//! [`SignalingMessage::to_json`].

use serde_json::{Map, Value, json};

use super::super::group::{SsrcGroup, fingerprint_hex, parse_fingerprint_hex};
use super::super::{SignalingError, Ssrc, parse_document};
use super::Role;

/// Most items any list in a control message may hold.
pub const MAX_LIST_ITEMS: usize = 64;

/// Longest ICE candidate line accepted, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

/// RFC 8445 §5.3: at most 256 ice-chars in a ufrag or password.
const ICE_CREDENTIAL_MAX_CHARS: usize = 256;

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalingMessage {
    /// `"@type": "InitialSetup"`.
    InitialSetup(InitialSetup),
    /// `"@type": "Candidates"`.
    Candidates(Candidates),
    /// `"@type": "NegotiateChannels"`.
    NegotiateChannels(NegotiateChannels),
    /// `"@type": "MediaState"`.
    MediaState(MediaState),
    /// Any other `@type`: to be ignored. Only the type name is kept.
    Unknown {
        /// The `@type` value.
        kind: String,
    },
}

/// ICE and DTLS parameters of one side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InitialSetup {
    /// ICE username fragment (RFC 8445 ice-chars, 4..=256).
    pub ufrag: String,
    /// ICE password (RFC 8445 ice-chars, 22..=256).
    pub pwd: String,
    /// Whether the sender supports ICE renomination; `false` when absent.
    pub renomination: bool,
    /// DTLS certificate fingerprints, at least one; tgcalls uses the first.
    pub fingerprints: Vec<DtlsFingerprint>,
}

impl InitialSetup {
    /// The `setup` a side announces (tgcalls `sendInitialSetup`): `actpass` for the caller,
    /// `passive` for the callee.
    pub fn setup_for(role: Role) -> DtlsSetup {
        match role {
            Role::Caller => DtlsSetup::Actpass,
            Role::Callee => DtlsSetup::Passive,
        }
    }

    /// Whether this side is the DTLS client given the peer's [`InitialSetup`] (tgcalls
    /// `NativeNetworkingImpl::setRemoteParams`, from the first fingerprint's `setup`): remote
    /// `active` makes us the server, `passive` the client, `actpass` leaves it to the roles
    /// (caller client, callee server). With the setups of [`Self::setup_for`] the caller is
    /// always the DTLS client. The ICE roles follow the call roles: caller controlling.
    pub fn local_is_dtls_client(&self, role: Role) -> bool {
        match self.fingerprints.first().map(|f| f.setup) {
            Some(DtlsSetup::Active) => false,
            Some(DtlsSetup::Passive) => true,
            Some(DtlsSetup::Actpass) | None => role == Role::Caller,
        }
    }
}

/// One DTLS certificate fingerprint with the sender's DTLS role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DtlsFingerprint {
    /// Hash function name (RFC 8122), e.g. `"sha-256"`.
    pub hash: String,
    /// The sender's DTLS setup (RFC 4145 / RFC 5763).
    pub setup: DtlsSetup,
    /// Uppercase or lowercase hex bytes joined by `:`, as many as `hash` produces.
    pub fingerprint: String,
}

impl DtlsFingerprint {
    /// A `sha-256` fingerprint of `digest`, written as RFC 8122 uppercase hex.
    pub fn sha256(digest: &[u8; 32], setup: DtlsSetup) -> Self {
        Self {
            hash: "sha-256".to_owned(),
            setup,
            fingerprint: fingerprint_hex(digest),
        }
    }

    /// The digest bytes of [`Self::fingerprint`] (valid after parsing).
    pub fn digest(&self) -> Option<Vec<u8>> {
        parse_fingerprint_hex(&self.fingerprint)
    }
}

/// DTLS `setup` attribute values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsSetup {
    /// `"active"`: the sender is the DTLS client.
    Active,
    /// `"passive"`: the sender is the DTLS server.
    Passive,
    /// `"actpass"`: either.
    Actpass,
}

impl DtlsSetup {
    /// The JSON/SDP name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::Actpass => "actpass",
        }
    }
}

/// Trickled ICE candidates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Candidates {
    /// SDP candidate lines (`"candidate:1 1 udp 2122260223 192.0.2.5 50000 typ host ..."`), from
    /// each item's `sdpString`; not parsed here (tgcalls skips lines it cannot parse, one by one).
    pub candidates: Vec<String>,
}

/// Offer or answer of the media contents (both directions use the same message).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NegotiateChannels {
    /// Matches an answer to its offer (u32, emitted as a decimal string).
    pub exchange_id: u32,
    /// The offered or accepted contents.
    pub contents: Vec<MediaContent>,
}

/// One media content (an outgoing stream of the sender).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MediaContent {
    /// Audio or video.
    pub kind: MediaKind,
    /// The main SSRC.
    pub ssrc: Ssrc,
    /// SSRC groups (`FID` for RTX, `SIM` for simulcast); no SSRC in them is 0.
    pub ssrc_groups: Vec<SsrcGroup>,
    /// Codecs.
    pub payload_types: Vec<PayloadType>,
    /// RTP header extensions.
    pub rtp_extensions: Vec<RtpExtension>,
}

/// `"audio"` or `"video"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `"audio"`.
    Audio,
    /// `"video"`.
    Video,
}

/// One codec of a [`MediaContent`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PayloadType {
    /// RTP payload type, 0..=127.
    pub id: u8,
    /// Codec name, e.g. `"opus"`.
    pub name: String,
    /// RTP clock rate in Hz.
    pub clockrate: u32,
    /// Channel count; 0 when absent (video).
    pub channels: u32,
    /// RTCP feedback: (`type`, `subtype`), e.g. `("transport-cc", "")`, `("nack", "pli")`.
    pub feedback_types: Vec<(String, String)>,
    /// Format parameters (`a=fmtp`), e.g. `("useinbandfec", "1")`; values are strings.
    pub parameters: Vec<(String, String)>,
}

/// One RTP header extension of a [`MediaContent`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RtpExtension {
    /// Extension id, 1..=255 (RFC 8285).
    pub id: u8,
    /// Extension URI.
    pub uri: String,
}

/// The sender's media state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MediaState {
    /// Microphone muted.
    pub muted: bool,
    /// Battery low.
    pub low_battery: bool,
    /// Camera state.
    pub video_state: VideoState,
    /// Camera rotation in degrees: 0, 90, 180 or 270. (tgcalls receivers read it from the wrong
    /// field and always see 0; ntgcalls reads it correctly.)
    pub video_rotation: u16,
    /// Screen-sharing state.
    pub screencast_state: VideoState,
}

/// State of a video source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VideoState {
    /// `"inactive"` (the default when absent).
    #[default]
    Inactive,
    /// `"suspended"`.
    Suspended,
    /// `"active"`.
    Active,
}

impl VideoState {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::Suspended => "suspended",
            Self::Active => "active",
        }
    }
}

impl SignalingMessage {
    /// Parses one decrypted control message.
    ///
    /// # Errors
    /// A [`SignalingError`] naming the offending JSON path; an unknown `@type` is not an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignalingError> {
        let doc = parse_document(bytes)?;
        let root = Path::Root;
        let obj = object(&doc, &root)?;
        let kind = required_str(obj, &root, "@type")?;
        Ok(match kind {
            "InitialSetup" => Self::InitialSetup(parse_initial_setup(obj, &root)?),
            "Candidates" => Self::Candidates(parse_candidates(obj, &root)?),
            "NegotiateChannels" => Self::NegotiateChannels(parse_negotiate(obj, &root)?),
            "MediaState" => Self::MediaState(parse_media_state(obj, &root)?),
            other => Self::Unknown {
                kind: other.to_owned(),
            },
        })
    }

    /// The JSON text, as tgcalls emits it (SSRCs and `exchangeId` as decimal strings).
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    fn to_value(&self) -> Value {
        match self {
            Self::InitialSetup(m) => json!({
                "@type": "InitialSetup",
                "ufrag": m.ufrag,
                "pwd": m.pwd,
                "renomination": m.renomination,
                "fingerprints": m.fingerprints.iter().map(|f| json!({
                    "hash": f.hash,
                    "setup": f.setup.as_str(),
                    "fingerprint": f.fingerprint,
                })).collect::<Vec<_>>(),
            }),
            Self::Candidates(m) => json!({
                "@type": "Candidates",
                "candidates": m.candidates.iter()
                    .map(|c| json!({ "sdpString": c }))
                    .collect::<Vec<_>>(),
            }),
            Self::NegotiateChannels(m) => json!({
                "@type": "NegotiateChannels",
                "exchangeId": m.exchange_id.to_string(),
                "contents": m.contents.iter().map(content_value).collect::<Vec<_>>(),
            }),
            Self::MediaState(m) => json!({
                "@type": "MediaState",
                "muted": m.muted,
                "lowBattery": m.low_battery,
                "videoState": m.video_state.as_str(),
                "videoRotation": m.video_rotation,
                "screencastState": m.screencast_state.as_str(),
            }),
            Self::Unknown { kind } => json!({ "@type": kind }),
        }
    }
}

fn content_value(c: &MediaContent) -> Value {
    let mut obj = Map::new();
    let kind = match c.kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    };
    obj.insert("type".into(), kind.into());
    obj.insert("ssrc".into(), c.ssrc.0.to_string().into());
    if !c.ssrc_groups.is_empty() {
        let groups = c.ssrc_groups.iter().map(|g| {
            json!({
                "semantics": g.semantics,
                "ssrcs": g.sources.iter().map(|s| s.0.to_string()).collect::<Vec<_>>(),
            })
        });
        obj.insert("ssrcGroups".into(), groups.collect::<Vec<_>>().into());
    }
    if !c.payload_types.is_empty() {
        let pts = c.payload_types.iter().map(|pt| {
            json!({
                "id": pt.id,
                "name": pt.name,
                "clockrate": pt.clockrate,
                "channels": pt.channels,
                "feedbackTypes": pt.feedback_types.iter()
                    .map(|(t, s)| json!({ "type": t, "subtype": s }))
                    .collect::<Vec<_>>(),
                "parameters": pt.parameters.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect::<Map<_, _>>(),
            })
        });
        obj.insert("payloadTypes".into(), pts.collect::<Vec<_>>().into());
    }
    let exts = c
        .rtp_extensions
        .iter()
        .map(|e| json!({ "id": e.id, "uri": e.uri }));
    obj.insert("rtpExtensions".into(), exts.collect::<Vec<_>>().into());
    Value::Object(obj)
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

fn parse_initial_setup(
    obj: &Map<String, Value>,
    at: &Path<'_>,
) -> Result<InitialSetup, SignalingError> {
    let ufrag = required_str(obj, at, "ufrag")?;
    check_ice_credential(ufrag, &at.key("ufrag"), 4)?;
    let pwd = required_str(obj, at, "pwd")?;
    check_ice_credential(pwd, &at.key("pwd"), 22)?;
    let renomination = match optional(obj, "renomination") {
        Some(v) => boolean(v, &at.key("renomination"))?,
        None => false,
    };
    let list_at = at.key("fingerprints");
    let list = array(required(obj, at, "fingerprints")?, &list_at)?;
    if list.is_empty() {
        return Err(list_at
            .invalid("no fingerprint: the peer's DTLS certificate could not be authenticated"));
    }
    let fingerprints = list
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = list_at.index(i);
            let obj = object(item, &at)?;
            let hash = required_str(obj, &at, "hash")?;
            let setup = match required_str(obj, &at, "setup")? {
                "active" => DtlsSetup::Active,
                "passive" => DtlsSetup::Passive,
                "actpass" => DtlsSetup::Actpass,
                other => {
                    return Err(at.key("setup").invalid(format!(
                        "{} is not active, passive or actpass",
                        quoted(other)
                    )));
                }
            };
            let fingerprint = required_str(obj, &at, "fingerprint")?;
            check_fingerprint(hash, fingerprint, &at.key("fingerprint"))?;
            Ok(DtlsFingerprint {
                hash: hash.to_owned(),
                setup,
                fingerprint: fingerprint.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InitialSetup {
        ufrag: ufrag.to_owned(),
        pwd: pwd.to_owned(),
        renomination,
        fingerprints,
    })
}

fn parse_candidates(obj: &Map<String, Value>, at: &Path<'_>) -> Result<Candidates, SignalingError> {
    let list_at = at.key("candidates");
    let list = array(required(obj, at, "candidates")?, &list_at)?;
    let candidates = list
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = list_at.index(i);
            let line = required_str(object(item, &at)?, &at, "sdpString")?;
            if line.is_empty() || line.len() > MAX_CANDIDATE_BYTES {
                return Err(at.key("sdpString").invalid(format!(
                    "{} bytes, expected 1..={MAX_CANDIDATE_BYTES}",
                    line.len()
                )));
            }
            Ok(line.to_owned())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Candidates { candidates })
}

fn parse_negotiate(
    obj: &Map<String, Value>,
    at: &Path<'_>,
) -> Result<NegotiateChannels, SignalingError> {
    let exchange_id = integer(
        required(obj, at, "exchangeId")?,
        &at.key("exchangeId"),
        0,
        u32::MAX,
    )?;
    // tgcalls tolerates a missing `contents`; ntgcalls requires it. Absent = none offered.
    let contents = match optional(obj, "contents") {
        Some(value) => {
            let list_at = at.key("contents");
            array(value, &list_at)?
                .iter()
                .enumerate()
                .map(|(i, item)| parse_content(item, &list_at.index(i)))
                .collect::<Result<Vec<_>, _>>()?
        }
        None => Vec::new(),
    };
    Ok(NegotiateChannels {
        exchange_id,
        contents,
    })
}

fn parse_content(value: &Value, at: &Path<'_>) -> Result<MediaContent, SignalingError> {
    let obj = object(value, at)?;
    let kind = match required_str(obj, at, "type")? {
        "audio" => MediaKind::Audio,
        "video" => MediaKind::Video,
        other => {
            return Err(at
                .key("type")
                .invalid(format!("{} is not audio or video", quoted(other))));
        }
    };
    let ssrc = Ssrc(integer(
        required(obj, at, "ssrc")?,
        &at.key("ssrc"),
        0,
        u32::MAX,
    )?);
    let ssrc_groups = optional_list(obj, at, "ssrcGroups", |item, at| {
        let obj = object(item, at)?;
        let semantics = required_str(obj, at, "semantics")?.to_owned();
        let list_at = at.key("ssrcs");
        let sources = array(required(obj, at, "ssrcs")?, &list_at)?
            .iter()
            .enumerate()
            .map(|(i, s)| integer(s, &list_at.index(i), 1, u32::MAX).map(Ssrc))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SsrcGroup { semantics, sources })
    })?;
    let payload_types = optional_list(obj, at, "payloadTypes", parse_payload_type)?;
    let rtp_extensions = optional_list(obj, at, "rtpExtensions", |item, at| {
        let obj = object(item, at)?;
        Ok(RtpExtension {
            id: integer(required(obj, at, "id")?, &at.key("id"), 1, u8::MAX)?,
            uri: required_str(obj, at, "uri")?.to_owned(),
        })
    })?;
    Ok(MediaContent {
        kind,
        ssrc,
        ssrc_groups,
        payload_types,
        rtp_extensions,
    })
}

fn parse_payload_type(value: &Value, at: &Path<'_>) -> Result<PayloadType, SignalingError> {
    let obj = object(value, at)?;
    let id = integer(required(obj, at, "id")?, &at.key("id"), 0, 127)?;
    let name = required_str(obj, at, "name")?.to_owned();
    let clockrate = integer(
        required(obj, at, "clockrate")?,
        &at.key("clockrate"),
        1,
        u32::MAX,
    )?;
    let channels = match optional(obj, "channels") {
        Some(v) => integer(v, &at.key("channels"), 0, u32::MAX)?,
        None => 0,
    };
    let feedback_types = optional_list(obj, at, "feedbackTypes", |item, at| {
        let obj = object(item, at)?;
        Ok((
            required_str(obj, at, "type")?.to_owned(),
            required_str(obj, at, "subtype")?.to_owned(),
        ))
    })?;
    let parameters = match optional(obj, "parameters") {
        Some(v) => {
            let params_at = at.key("parameters");
            let map = object(v, &params_at)?;
            if map.len() > MAX_LIST_ITEMS {
                return Err(params_at.invalid(too_many(map.len())));
            }
            map.iter()
                .map(|(k, v)| Ok((k.clone(), string(v, &params_at.key(k))?.to_owned())))
                .collect::<Result<Vec<_>, SignalingError>>()?
        }
        None => Vec::new(),
    };
    Ok(PayloadType {
        id,
        name,
        clockrate,
        channels,
        feedback_types,
        parameters,
    })
}

fn parse_media_state(
    obj: &Map<String, Value>,
    at: &Path<'_>,
) -> Result<MediaState, SignalingError> {
    let flag = |key: &str| match optional(obj, key) {
        Some(v) => boolean(v, &at.key(key)),
        None => Ok(false),
    };
    let state = |key: &str| match optional(obj, key) {
        Some(v) => match string(v, &at.key(key))? {
            "inactive" => Ok(VideoState::Inactive),
            "suspended" => Ok(VideoState::Suspended),
            "active" => Ok(VideoState::Active),
            other => Err(at.key(key).invalid(format!(
                "{} is not inactive, suspended or active",
                quoted(other)
            ))),
        },
        None => Ok(VideoState::Inactive),
    };
    let video_rotation = match optional(obj, "videoRotation") {
        Some(v) => {
            let r = integer(v, &at.key("videoRotation"), 0u16, 270)?;
            if r % 90 != 0 {
                return Err(at
                    .key("videoRotation")
                    .invalid(format!("{r} is not 0, 90, 180 or 270")));
            }
            r
        }
        None => 0,
    };
    Ok(MediaState {
        muted: flag("muted")?,
        low_battery: flag("lowBattery")?,
        video_state: state("videoState")?,
        video_rotation,
        screencast_state: state("screencastState")?,
    })
}

/// RFC 8445 §5.3 `ice-char = ALPHA / DIGIT / "+" / "/"`, `min..=256` of them.
fn check_ice_credential(value: &str, at: &Path<'_>, min: usize) -> Result<(), SignalingError> {
    if let Some(bad) = value
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '+' || c == '/'))
    {
        return Err(at.invalid(format!(
            "character {bad:?} is not an ice-char (RFC 8445: ALPHA / DIGIT / + / /)"
        )));
    }
    if !(min..=ICE_CREDENTIAL_MAX_CHARS).contains(&value.len()) {
        return Err(at.invalid(format!(
            "{} chars, RFC 8445 requires {min}..={ICE_CREDENTIAL_MAX_CHARS}",
            value.len()
        )));
    }
    Ok(())
}

/// RFC 8122 §5 fingerprint: hex byte pairs joined by `:`, as many as `hash` produces.
fn check_fingerprint(hash: &str, fingerprint: &str, at: &Path<'_>) -> Result<(), SignalingError> {
    let Some(bytes) = parse_fingerprint_hex(fingerprint) else {
        return Err(at.invalid(format!(
            "{} is not colon-separated hex bytes",
            quoted(fingerprint)
        )));
    };
    let expected = match hash.to_ascii_lowercase().as_str() {
        "sha-1" => 20,
        "sha-224" => 28,
        "sha-256" => 32,
        "sha-384" => 48,
        "sha-512" => 64,
        _ => {
            return Err(at.invalid(format!(
                "unsupported hash {}; expected sha-1, sha-224, sha-256, sha-384 or sha-512",
                quoted(hash)
            )));
        }
    };
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(at.invalid(format!(
            "{} bytes, a {hash} fingerprint has {expected}",
            bytes.len()
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// JSON access with paths (the same conventions as group.rs)
// ---------------------------------------------------------------------------------------------

/// A JSON path, built on the stack while descending and rendered only for an error.
#[derive(Debug, Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Self, &'a str),
    Index(&'a Self, usize),
}

impl<'a> Path<'a> {
    fn key<'b>(&'b self, key: &'b str) -> Path<'b>
    where
        'a: 'b,
    {
        Path::Key(self, key)
    }

    fn index<'b>(&'b self, index: usize) -> Path<'b>
    where
        'a: 'b,
    {
        Path::Index(self, index)
    }

    fn missing(&self) -> SignalingError {
        SignalingError::MissingField {
            field: self.to_string(),
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> SignalingError {
        SignalingError::InvalidField {
            field: self.to_string(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => f.write_str("$"),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// A field of `obj`, with `null` treated as absent.
fn optional<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn required<'v>(
    obj: &'v Map<String, Value>,
    at: &Path<'_>,
    key: &str,
) -> Result<&'v Value, SignalingError> {
    optional(obj, key).ok_or_else(|| at.key(key).missing())
}

fn required_str<'v>(
    obj: &'v Map<String, Value>,
    at: &Path<'_>,
    key: &str,
) -> Result<&'v str, SignalingError> {
    string(required(obj, at, key)?, &at.key(key))
}

/// The items of an optional list field, each parsed with `item`.
fn optional_list<T>(
    obj: &Map<String, Value>,
    at: &Path<'_>,
    key: &str,
    item: impl Fn(&Value, &Path<'_>) -> Result<T, SignalingError>,
) -> Result<Vec<T>, SignalingError> {
    let Some(value) = optional(obj, key) else {
        return Ok(Vec::new());
    };
    let list_at = at.key(key);
    array(value, &list_at)?
        .iter()
        .enumerate()
        .map(|(i, v)| item(v, &list_at.index(i)))
        .collect()
}

fn object<'v>(value: &'v Value, at: &Path<'_>) -> Result<&'v Map<String, Value>, SignalingError> {
    value
        .as_object()
        .ok_or_else(|| at.invalid(format!("expected an object, found {}", type_name(value))))
}

/// An array of at most [`MAX_LIST_ITEMS`] elements.
fn array<'v>(value: &'v Value, at: &Path<'_>) -> Result<&'v [Value], SignalingError> {
    match value {
        Value::Array(list) if list.len() <= MAX_LIST_ITEMS => Ok(list),
        Value::Array(list) => Err(at.invalid(too_many(list.len()))),
        other => Err(at.invalid(format!("expected an array, found {}", type_name(other)))),
    }
}

fn string<'v>(value: &'v Value, at: &Path<'_>) -> Result<&'v str, SignalingError> {
    value
        .as_str()
        .ok_or_else(|| at.invalid(format!("expected a string, found {}", type_name(value))))
}

fn boolean(value: &Value, at: &Path<'_>) -> Result<bool, SignalingError> {
    value
        .as_bool()
        .ok_or_else(|| at.invalid(format!("expected a boolean, found {}", type_name(value))))
}

/// An integer in `min..=max`, given as a JSON number or a decimal string.
fn integer<T>(value: &Value, at: &Path<'_>, min: T, max: T) -> Result<T, SignalingError>
where
    T: Copy + std::fmt::Display + Into<i128> + TryFrom<i128>,
{
    let parsed: Option<i128> = match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Some(u.into()),
            (None, Some(i)) => Some(i.into()),
            (None, None) => return Err(at.invalid(format!("{n} is not an integer"))),
        },
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(at.invalid(format!("{} is not a decimal integer", quoted(s))));
            }
            s.parse::<i128>().ok()
        }
        other => {
            return Err(at.invalid(format!(
                "expected an integer or a decimal string, found {}",
                type_name(other)
            )));
        }
    };
    parsed
        .filter(|n| (min.into()..=max.into()).contains(n))
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            let shown = match value {
                Value::String(s) => quoted(s),
                other => other.to_string(),
            };
            at.invalid(format!("{shown} is out of range {min}..={max}"))
        })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn too_many(len: usize) -> String {
    format!("{len} items, at most {MAX_LIST_ITEMS} allowed")
}

/// Quotes untrusted text for an error message, cut to a readable length.
fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}...", s.get(..cut).unwrap_or_default()),
        None => format!("{s:?}"),
    }
}
