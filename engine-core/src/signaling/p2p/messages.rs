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

use serde_json::{Map, Value};

use super::super::group::{SsrcGroup, fingerprint_hex, parse_fingerprint_hex};
use super::super::json::{
    self, Object, Path, Quoted, array, boolean, check_ice_credential, integer, object, optional,
    optional_list, quoted, required, required_str, string, too_many,
};
use super::super::{SignalingError, Ssrc, parse_document};
use super::Role;

/// Most items any list in a control message may hold.
pub const MAX_LIST_ITEMS: usize = json::MAX_LIST_ITEMS;

/// Longest ICE candidate line accepted, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

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
    /// Format parameters (`a=fmtp`), e.g. `("useinbandfec", "1")`; values are strings. Parsed
    /// sorted by name; names must be unique (and sorted) for [`SignalingMessage::to_json`] to
    /// round-trip exactly.
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

    /// The JSON text, as tgcalls emits it: SSRCs and `exchangeId` as decimal strings, other
    /// numbers as numbers, the keys of every object in alphabetical order (tgcalls' json11
    /// objects are sorted maps), no whitespace.
    pub fn to_json(&self) -> String {
        json::emit(256, |o| match self {
            Self::InitialSetup(m) => {
                o.field("@type", "InitialSetup")
                    .array("fingerprints", |a| {
                        for f in &m.fingerprints {
                            a.object(|o| {
                                o.field("fingerprint", &f.fingerprint)
                                    .field("hash", &f.hash)
                                    .field("setup", f.setup.as_str());
                            });
                        }
                    })
                    .field("pwd", &m.pwd)
                    .field("renomination", m.renomination)
                    .field("ufrag", &m.ufrag);
            }
            Self::Candidates(m) => {
                o.field("@type", "Candidates").array("candidates", |a| {
                    for c in &m.candidates {
                        a.object(|o| {
                            o.field("sdpString", c);
                        });
                    }
                });
            }
            Self::NegotiateChannels(m) => {
                o.field("@type", "NegotiateChannels")
                    .array("contents", |a| {
                        for c in &m.contents {
                            a.object(|o| write_content(o, c));
                        }
                    })
                    .field("exchangeId", Quoted(m.exchange_id));
            }
            Self::MediaState(m) => {
                o.field("@type", "MediaState")
                    .field("lowBattery", m.low_battery)
                    .field("muted", m.muted)
                    .field("screencastState", m.screencast_state.as_str())
                    .field("videoRotation", m.video_rotation)
                    .field("videoState", m.video_state.as_str());
            }
            Self::Unknown { kind } => {
                o.field("@type", kind);
            }
        })
    }
}

/// Writes one entry of `contents`, keys in alphabetical order (see [`SignalingMessage::to_json`]).
fn write_content(o: &mut Object<'_>, c: &MediaContent) {
    if !c.payload_types.is_empty() {
        o.array("payloadTypes", |a| {
            for pt in &c.payload_types {
                a.object(|o| {
                    o.field("channels", pt.channels)
                        .field("clockrate", pt.clockrate)
                        .array("feedbackTypes", |a| {
                            for (kind, subtype) in &pt.feedback_types {
                                a.object(|o| {
                                    o.field("subtype", subtype).field("type", kind);
                                });
                            }
                        })
                        .field("id", pt.id)
                        .field("name", &pt.name)
                        .object("parameters", |o| {
                            for (name, value) in &pt.parameters {
                                o.field(name, value);
                            }
                        });
                });
            }
        });
    }
    o.array("rtpExtensions", |a| {
        for e in &c.rtp_extensions {
            a.object(|o| {
                o.field("id", e.id).field("uri", &e.uri);
            });
        }
    })
    .field("ssrc", Quoted(c.ssrc.0));
    if !c.ssrc_groups.is_empty() {
        o.array("ssrcGroups", |a| {
            for g in &c.ssrc_groups {
                a.object(|o| {
                    o.field("semantics", &g.semantics).array("ssrcs", |a| {
                        for s in &g.sources {
                            a.item(Quoted(s.0));
                        }
                    });
                });
            }
        });
    }
    let kind = match c.kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    };
    o.field("type", kind);
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

/// RFC 8122 §5 fingerprint ([`json::check_fingerprint`]) with a hash a DTLS stack can verify:
/// the SHA family only.
fn check_fingerprint(hash: &str, fingerprint: &str, at: &Path<'_>) -> Result<(), SignalingError> {
    json::check_fingerprint(hash, fingerprint, at)?;
    match json::digest_len(hash) {
        Some(_) if !hash.eq_ignore_ascii_case("md5") => Ok(()),
        _ => Err(at.invalid(format!(
            "unsupported hash {}; expected sha-1, sha-224, sha-256, sha-384 or sha-512",
            quoted(hash)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FP: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:\
                      AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    fn parse(s: &str) -> Result<SignalingMessage, SignalingError> {
        SignalingMessage::parse(s.as_bytes())
    }

    fn round_trip(msg: &SignalingMessage) {
        let json = msg.to_json();
        assert_eq!(
            &SignalingMessage::parse(json.as_bytes()).unwrap(),
            msg,
            "{json}"
        );
    }

    fn invalid(s: &str) -> String {
        match parse(s) {
            Err(SignalingError::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    fn missing(s: &str) -> String {
        match parse(s) {
            Err(SignalingError::MissingField { field }) => field,
            other => panic!("expected MissingField, got {other:?}"),
        }
    }

    /// What the real ntgcalls 3.0.5 sent (testdata/README.md) parses, field by field.
    #[test]
    fn parses_what_ntgcalls_3_0_5_sends() {
        let SignalingMessage::InitialSetup(setup) =
            parse(include_str!("testdata/ntgcalls-3.0.5-initial-setup.json")).unwrap()
        else {
            panic!("not an InitialSetup")
        };
        assert!(setup.renomination);
        assert_eq!(setup.ufrag, "WFpr");
        assert_eq!(setup.fingerprints[0].setup, DtlsSetup::Actpass);
        assert_eq!(setup.fingerprints[0].digest().map(|d| d.len()), Some(32));

        let SignalingMessage::Candidates(c) =
            parse(include_str!("testdata/ntgcalls-3.0.5-candidates.json")).unwrap()
        else {
            panic!("not Candidates")
        };
        // `sdpMid` / `sdpMLineIndex` beside `sdpString` are ignored.
        assert_eq!(c.candidates.len(), 1);
        assert!(c.candidates[0].starts_with("candidate:3895772297 1 udp 2122260224 10.214.9.2 "));

        let SignalingMessage::NegotiateChannels(n) =
            parse(include_str!("testdata/ntgcalls-3.0.5-offer.json")).unwrap()
        else {
            panic!("not NegotiateChannels")
        };
        assert_eq!(n.exchange_id, 591_650_521);
        let kinds: Vec<_> = n.contents.iter().map(|c| (c.kind, c.ssrc.0)).collect();
        assert_eq!(
            kinds,
            [
                (MediaKind::Audio, 4_117_331_399),
                (MediaKind::Video, 671_473_898)
            ]
        );
        let audio = &n.contents[0];
        assert_eq!(audio.payload_types[0].name, "opus");
        assert_eq!(audio.payload_types[0].id, 111);
        assert_eq!(audio.payload_types.len(), 8);
        assert_eq!(audio.rtp_extensions.len(), 2);
        assert_eq!(n.contents[1].ssrc_groups[0].semantics, "FID");
    }

    /// As tgcalls `InitialSetupMessage_serialize` emits it.
    fn initial_setup_json(setup: &str) -> String {
        format!(
            r#"{{"@type":"InitialSetup","fingerprints":[{{"fingerprint":"{FP}","hash":"sha-256","setup":"{setup}"}}],"pwd":"abcdefghijklmnopqrstuvwx","renomination":true,"ufrag":"Ab12"}}"#
        )
    }

    #[test]
    fn initial_setup_parses_and_round_trips() {
        let SignalingMessage::InitialSetup(m) = parse(&initial_setup_json("actpass")).unwrap()
        else {
            panic!("wrong type");
        };
        assert_eq!(m.ufrag, "Ab12");
        assert_eq!(m.pwd.len(), 24);
        assert!(m.renomination);
        assert_eq!(m.fingerprints[0].setup, DtlsSetup::Actpass);
        assert_eq!(m.fingerprints[0].digest().unwrap().len(), 32);
        round_trip(&SignalingMessage::InitialSetup(m));
        // renomination is optional (tgcalls treats it as false).
        let json = initial_setup_json("passive").replace(r#""renomination":true,"#, "");
        let SignalingMessage::InitialSetup(m) = parse(&json).unwrap() else {
            panic!("wrong type");
        };
        assert!(!m.renomination);
    }

    #[test]
    fn dtls_and_setup_roles_follow_tgcalls() {
        assert_eq!(InitialSetup::setup_for(Role::Caller), DtlsSetup::Actpass);
        assert_eq!(InitialSetup::setup_for(Role::Callee), DtlsSetup::Passive);
        let remote = |setup: DtlsSetup| InitialSetup {
            ufrag: "Ab12".into(),
            pwd: "abcdefghijklmnopqrstuvwx".into(),
            renomination: false,
            fingerprints: vec![DtlsFingerprint::sha256(&[7; 32], setup)],
        };
        // Callee sees the caller's actpass: server. Caller sees the callee's passive: client.
        assert!(!remote(DtlsSetup::Actpass).local_is_dtls_client(Role::Callee));
        assert!(remote(DtlsSetup::Passive).local_is_dtls_client(Role::Caller));
        assert!(!remote(DtlsSetup::Active).local_is_dtls_client(Role::Caller));
        assert!(remote(DtlsSetup::Actpass).local_is_dtls_client(Role::Caller));
        round_trip(&SignalingMessage::InitialSetup(remote(DtlsSetup::Active)));
    }

    #[test]
    fn initial_setup_errors_name_the_field() {
        let ok = initial_setup_json("actpass");
        assert_eq!(
            missing(&ok.replace(r#""ufrag":"Ab12""#, r#""x":1"#)),
            "ufrag"
        );
        assert_eq!(invalid(&ok.replace("Ab12", "A b")), "ufrag");
        assert_eq!(invalid(&ok.replace("Ab12", "Ab")), "ufrag");
        assert_eq!(
            invalid(&ok.replace("abcdefghijklmnopqrstuvwx", "short")),
            "pwd"
        );
        assert_eq!(invalid(&ok.replace("true", "\"yes\"")), "renomination");
        assert_eq!(
            invalid(&ok.replace("actpass", "holdconn")),
            "fingerprints[0].setup"
        );
        assert_eq!(
            invalid(&ok.replace("AB:CD:EF:01", "AB:CD:EF")),
            "fingerprints[0].fingerprint"
        );
        assert_eq!(
            invalid(&ok.replace("AB:CD", "ZZ:CD")),
            "fingerprints[0].fingerprint"
        );
        assert_eq!(
            invalid(&ok.replace("sha-256", "md5")),
            "fingerprints[0].fingerprint"
        );
        assert_eq!(
            missing(&ok.replace(r#""hash":"sha-256","#, "")),
            "fingerprints[0].hash"
        );
        let no_fp = r#"{"@type":"InitialSetup","ufrag":"Ab12","pwd":"abcdefghijklmnopqrstuvwx","fingerprints":[]}"#;
        assert_eq!(invalid(no_fp), "fingerprints");
    }

    #[test]
    fn candidates_parse_and_round_trip() {
        let json = r#"{"@type":"Candidates","candidates":[{"sdpString":"candidate:1 1 udp 2122260223 192.0.2.5 50000 typ host generation 0 ufrag Ab12 network-id 1"}]}"#;
        let msg = parse(json).unwrap();
        let SignalingMessage::Candidates(c) = &msg else {
            panic!("wrong type");
        };
        assert!(c.candidates[0].starts_with("candidate:1 1 udp"));
        round_trip(&msg);
        assert_eq!(
            parse(r#"{"@type":"Candidates","candidates":[]}"#).unwrap(),
            SignalingMessage::Candidates(Candidates { candidates: vec![] })
        );
        assert_eq!(missing(r#"{"@type":"Candidates"}"#), "candidates");
        assert_eq!(
            invalid(r#"{"@type":"Candidates","candidates":[{"sdpString":"a"},{"sdpString":5}]}"#),
            "candidates[1].sdpString"
        );
        assert_eq!(
            invalid(r#"{"@type":"Candidates","candidates":[{"sdpString":""}]}"#),
            "candidates[0].sdpString"
        );
        assert_eq!(
            invalid(r#"{"@type":"Candidates","candidates":{}}"#),
            "candidates"
        );
    }

    /// The NegotiateChannels example of telegram-signaling.md §4.7 (tgcalls shape).
    const NEGOTIATE: &str = r#"{"@type":"NegotiateChannels","exchangeId":"2894763621",
      "contents":[
        {"type":"audio","ssrc":"3400000001",
         "payloadTypes":[{"id":111,"name":"opus","clockrate":48000,"channels":2,
                          "feedbackTypes":[{"type":"transport-cc","subtype":""}],
                          "parameters":{"minptime":"10","useinbandfec":"1"}}],
         "rtpExtensions":[{"id":2,"uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"},
                          {"id":3,"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"}]},
        {"type":"video","ssrc":3400000002,
         "ssrcGroups":[{"semantics":"FID","ssrcs":["3400000002",3400000003]}],
         "payloadTypes":[{"id":96,"name":"VP8","clockrate":90000,"feedbackTypes":[{"type":"nack","subtype":"pli"}]}],
         "rtpExtensions":[{"id":13,"uri":"urn:3gpp:video-orientation"}]}]}"#;

    #[test]
    fn negotiate_channels_parses_and_round_trips() {
        let msg = parse(NEGOTIATE).unwrap();
        let SignalingMessage::NegotiateChannels(n) = &msg else {
            panic!("wrong type");
        };
        assert_eq!(n.exchange_id, 2_894_763_621);
        let audio = &n.contents[0];
        assert_eq!(audio.kind, MediaKind::Audio);
        assert_eq!(audio.ssrc, Ssrc(3_400_000_001));
        assert_eq!(audio.payload_types[0].id, 111);
        assert_eq!(audio.payload_types[0].channels, 2);
        assert_eq!(
            audio.payload_types[0].parameters,
            vec![
                ("minptime".to_owned(), "10".to_owned()),
                ("useinbandfec".to_owned(), "1".to_owned())
            ]
        );
        let video = &n.contents[1];
        assert_eq!(
            video.ssrc_groups[0].sources,
            vec![Ssrc(3_400_000_002), Ssrc(3_400_000_003)]
        );
        assert_eq!(video.payload_types[0].channels, 0);
        assert_eq!(video.rtp_extensions[0].id, 13);
        round_trip(&msg);
        // SSRCs and exchangeId go out as strings, like tgcalls.
        assert!(msg.to_json().contains(r#""exchangeId":"2894763621""#));
        assert!(msg.to_json().contains(r#""ssrc":"3400000002""#));
    }

    #[test]
    fn negotiate_channels_errors_name_the_field() {
        let with = |from: &str, to: &str| NEGOTIATE.replacen(from, to, 1);
        assert_eq!(invalid(&with(r#""2894763621""#, r#""abc""#)), "exchangeId");
        assert_eq!(
            invalid(&with(r#""2894763621""#, "4294967296")),
            "exchangeId"
        );
        assert_eq!(
            missing(&with(r#""exchangeId":"2894763621","#, "")),
            "exchangeId"
        );
        assert_eq!(invalid(&with(r#""3400000001""#, "-1")), "contents[0].ssrc");
        assert_eq!(
            invalid(&with(r#""type":"audio""#, r#""type":"data""#)),
            "contents[0].type"
        );
        assert_eq!(
            invalid(&with(r#""id":111"#, r#""id":128"#)),
            "contents[0].payloadTypes[0].id"
        );
        assert_eq!(
            invalid(&with(r#""minptime":"10""#, r#""minptime":10"#)),
            "contents[0].payloadTypes[0].parameters.minptime"
        );
        assert_eq!(
            invalid(&with(r#""channels":2"#, r#""channels":"two""#)),
            "contents[0].payloadTypes[0].channels"
        );
        assert_eq!(
            missing(&with(r#""subtype":"""#, r#""x":"""#)),
            "contents[0].payloadTypes[0].feedbackTypes[0].subtype"
        );
        assert_eq!(
            invalid(&with(r#""id":2,"#, r#""id":0,"#)),
            "contents[0].rtpExtensions[0].id"
        );
        assert_eq!(
            invalid(&with(r#"["3400000002",3400000003]"#, r#"["0"]"#)),
            "contents[1].ssrcGroups[0].ssrcs[0]"
        );
        // A missing contents list is an empty offer (tgcalls).
        let SignalingMessage::NegotiateChannels(n) =
            parse(r#"{"@type":"NegotiateChannels","exchangeId":1}"#).unwrap()
        else {
            panic!("wrong type");
        };
        assert!(n.contents.is_empty());
    }

    #[test]
    fn media_state_parses_defaults_and_round_trips() {
        let json = r#"{"@type":"MediaState","muted":true,"lowBattery":false,"videoState":"active","videoRotation":90,"screencastState":"suspended"}"#;
        let msg = parse(json).unwrap();
        assert_eq!(
            msg,
            SignalingMessage::MediaState(MediaState {
                muted: true,
                low_battery: false,
                video_state: VideoState::Active,
                video_rotation: 90,
                screencast_state: VideoState::Suspended,
            })
        );
        round_trip(&msg);
        assert_eq!(
            parse(r#"{"@type":"MediaState"}"#).unwrap(),
            SignalingMessage::MediaState(MediaState::default())
        );
        assert_eq!(invalid(r#"{"@type":"MediaState","muted":1}"#), "muted");
        assert_eq!(
            invalid(r#"{"@type":"MediaState","videoState":"on"}"#),
            "videoState"
        );
        assert_eq!(
            invalid(r#"{"@type":"MediaState","videoRotation":45}"#),
            "videoRotation"
        );
        assert_eq!(
            invalid(r#"{"@type":"MediaState","videoRotation":360}"#),
            "videoRotation"
        );
        assert_eq!(
            invalid(r#"{"@type":"MediaState","screencastState":false}"#),
            "screencastState"
        );
    }

    #[test]
    fn envelope_errors_and_unknown_types() {
        assert_eq!(
            parse(r#"{"@type":"RemoteVideoIsActive","active":true}"#).unwrap(),
            SignalingMessage::Unknown {
                kind: "RemoteVideoIsActive".into()
            }
        );
        round_trip(&SignalingMessage::Unknown { kind: "X".into() });
        assert_eq!(missing(r#"{"type":"InitialSetup"}"#), "@type");
        assert_eq!(invalid(r#"{"@type":5}"#), "@type");
        assert_eq!(invalid("[]"), "$");
        assert!(matches!(
            parse("{"),
            Err(SignalingError::InvalidJson { .. })
        ));
        assert!(matches!(
            SignalingMessage::parse(&vec![b' '; 70_000]),
            Err(SignalingError::TooLarge { .. })
        ));
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9:/._-]{0,12}"
    }

    fn video_state() -> impl Strategy<Value = VideoState> {
        prop_oneof![
            Just(VideoState::Inactive),
            Just(VideoState::Suspended),
            Just(VideoState::Active)
        ]
    }

    fn message() -> impl Strategy<Value = SignalingMessage> {
        let setup = prop_oneof![
            Just(DtlsSetup::Active),
            Just(DtlsSetup::Passive),
            Just(DtlsSetup::Actpass)
        ];
        let initial = (
            "[a-zA-Z0-9+/]{4,16}",
            "[a-zA-Z0-9+/]{22,32}",
            any::<bool>(),
            proptest::collection::vec((any::<[u8; 32]>(), setup), 1..3),
        )
            .prop_map(|(ufrag, pwd, renomination, fps)| {
                SignalingMessage::InitialSetup(InitialSetup {
                    ufrag,
                    pwd,
                    renomination,
                    fingerprints: fps
                        .iter()
                        .map(|(d, s)| DtlsFingerprint::sha256(d, *s))
                        .collect(),
                })
            });
        let candidates = proptest::collection::vec("candidate:[ -~]{1,60}", 0..4)
            .prop_map(|candidates| SignalingMessage::Candidates(Candidates { candidates }));
        let payload_type = (
            0u8..=127,
            word(),
            1u32..,
            any::<u32>(),
            proptest::collection::vec((word(), word()), 0..3),
            proptest::collection::btree_map(word(), word(), 0..3),
        )
            .prop_map(|(id, name, clockrate, channels, fb, params)| PayloadType {
                id,
                name,
                clockrate,
                channels,
                feedback_types: fb,
                parameters: params.into_iter().collect(),
            });
        let content = (
            any::<bool>(),
            any::<u32>(),
            proptest::collection::vec((word(), proptest::collection::vec(1u32.., 1..3)), 0..2),
            proptest::collection::vec(payload_type, 0..3),
            proptest::collection::vec((1u8.., word()), 0..3),
        )
            .prop_map(|(audio, ssrc, groups, pts, exts)| MediaContent {
                kind: if audio {
                    MediaKind::Audio
                } else {
                    MediaKind::Video
                },
                ssrc: Ssrc(ssrc),
                ssrc_groups: groups
                    .into_iter()
                    .map(|(semantics, s)| SsrcGroup {
                        semantics,
                        sources: s.into_iter().map(Ssrc).collect(),
                    })
                    .collect(),
                payload_types: pts,
                rtp_extensions: exts
                    .into_iter()
                    .map(|(id, uri)| RtpExtension { id, uri })
                    .collect(),
            });
        let negotiate = (any::<u32>(), proptest::collection::vec(content, 0..3)).prop_map(
            |(exchange_id, contents)| {
                SignalingMessage::NegotiateChannels(NegotiateChannels {
                    exchange_id,
                    contents,
                })
            },
        );
        let state = (
            any::<bool>(),
            any::<bool>(),
            video_state(),
            prop_oneof![Just(0u16), Just(90), Just(180), Just(270)],
            video_state(),
        )
            .prop_map(
                |(muted, low_battery, video_state, video_rotation, screencast_state)| {
                    SignalingMessage::MediaState(MediaState {
                        muted,
                        low_battery,
                        video_state,
                        video_rotation,
                        screencast_state,
                    })
                },
            );
        prop_oneof![initial, candidates, negotiate, state]
    }

    proptest! {
        #[test]
        fn emitted_messages_parse_back(msg in message()) {
            let json = msg.to_json();
            prop_assert_eq!(SignalingMessage::parse(json.as_bytes()).unwrap(), msg);
        }

        /// The emitted text is what serde_json writes for the same document (keys sorted, as
        /// tgcalls' json11 sorts them; no whitespace), so the fuzz seeds stay byte-exact.
        #[test]
        fn emitted_text_is_canonical(msg in message()) {
            let json = msg.to_json();
            let value: Value = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(value.to_string(), json);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignalingMessage::parse(&bytes);
        }

        /// Mutated valid documents: typed error or a value that emits and parses back.
        #[test]
        fn mutated_documents_never_panic(
            pick in 0usize..4,
            cut in any::<prop::sample::Index>(),
            insert in "[ -~]{0,8}",
        ) {
            let docs = [initial_setup_json("actpass"), NEGOTIATE.to_owned(),
                r#"{"@type":"MediaState","videoRotation":90}"#.to_owned(),
                r#"{"@type":"Candidates","candidates":[{"sdpString":"candidate:x"}]}"#.to_owned()];
            let doc = &docs[pick];
            let at = cut.index(doc.len() + 1);
            let at = (0..=at).rev().find(|&i| doc.is_char_boundary(i)).unwrap_or(0);
            let mutated = format!("{}{}{}", &doc[..at], insert, &doc[at..]);
            if let Ok(msg) = SignalingMessage::parse(mutated.as_bytes()) {
                prop_assert_eq!(SignalingMessage::parse(msg.to_json().as_bytes()).unwrap(), msg);
            }
        }
    }
}
