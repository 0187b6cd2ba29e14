//! Shared inputs for ringcast's criterion benchmarks (and, later, the `load` tool).
#![forbid(unsafe_code)]

/// A Telegram-shaped SFU answer (numbers as strings, two candidates, audio and video sections),
/// as `updateGroupCallConnection.params.data` carries it.
pub const SAMPLE_RESPONSE: &str = r#"{"transport":{"xmlns":"urn:xmpp:jingle:transports:ice-udp:1","rtcp-mux":true,
"ufrag":"1d2e3f4g5h6i7","pwd":"3k4l5m6n7o8p9q0r1s2t3u4v",
"fingerprints":[{"hash":"sha-256","setup":"active","fingerprint":"0B:7C:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:E1"}],
"candidates":[
{"generation":"0","component":"1","protocol":"udp","port":"32001","ip":"203.0.113.10","foundation":"1","id":"6f1b2c","priority":"2130706431","type":"host","network":"0"},
{"generation":"0","component":"1","protocol":"udp","port":"32001","ip":"2001:db8::10","foundation":"2","id":"6f1b2d","priority":"2130706175","type":"host","network":"0"}]},
"audio":{"payload-types":[{"id":111,"name":"opus","clockrate":48000,"channels":2,"parameters":{"minptime":10,"useinbandfec":1},"rtcp-fbs":[{"type":"transport-cc"}]}],
"rtp-hdrexts":[{"id":1,"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level"},{"id":3,"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"}]},
"video":{"endpoint":"a1b2c3d4","server_sources":[-1017713629],
"payload-types":[{"id":100,"name":"VP8","clockrate":90000,"rtcp-fbs":[{"type":"goog-remb"},{"type":"transport-cc"},{"type":"ccm","subtype":"fir"},{"type":"nack"},{"type":"nack","subtype":"pli"}]},{"id":101,"name":"rtx","clockrate":90000,"parameters":{"apt":100}}],
"rtp-hdrexts":[{"id":2,"uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"},{"id":3,"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"},{"id":13,"uri":"urn:3gpp:video-orientation"}]}}"#;
