//! Shared by the `ogg_reader` fuzz target and its stable replay in
//! `engine-core/tests/fuzz_corpus.rs` (both include this file with `#[path]`).
#![allow(dead_code, unreachable_pub, missing_debug_implementations)] // shared by a fuzz target and a test

use bytes::Bytes;
use ringcast_core::FrameSource;
use ringcast_core::SourceError;
use ringcast_core::media::{OggOpusReader, OggOpusStream};

/// What reading a whole input gave.
#[derive(Debug)]
pub struct Read {
    /// Audio packets handed out before the end or the error.
    pub frames: usize,
    /// Total Opus duration of those packets, in 48 kHz samples.
    pub samples: u64,
    /// `Err` if the headers were refused or reading stopped on an error.
    pub end: Result<(), SourceError>,
}

/// Opens `data` as Ogg/Opus and reads every packet. Panics if the reader breaks a promise:
/// more packets than the input has bytes (no input can make it loop), more bytes handed out
/// than the input holds, an error that is not sticky, or an end that is not final.
pub fn read_all(data: &[u8]) -> Read {
    let mut reader = match OggOpusReader::new(Bytes::copy_from_slice(data)) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                matches!(e, SourceError::Ogg { .. } | SourceError::NotOpus { .. }),
                "header errors are Ogg or NotOpus: {e:?}"
            );
            return Read {
                frames: 0,
                samples: 0,
                end: Err(e),
            };
        }
    };
    assert!(matches!(reader.channels(), 1..=255));
    let mut frames = 0_usize;
    let mut samples = 0_u64;
    let mut bytes = 0_usize;
    let end = loop {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                frames += 1;
                bytes += frame.data.len();
                samples += u64::from(frame.duration_samples);
                assert!(!frame.data.is_empty());
                assert!((120..=5760).contains(&frame.duration_samples));
                // Every packet needs at least one lacing value and at least its own bytes.
                assert!(frames <= data.len(), "more packets than input bytes");
                assert!(bytes <= data.len(), "more packet bytes than input bytes");
            }
            Ok(None) => {
                assert!(matches!(reader.next_frame(), Ok(None)), "end must be final");
                break Ok(());
            }
            Err(e) => {
                assert!(
                    matches!(e, SourceError::Ogg { .. }),
                    "read errors are Ogg: {e:?}"
                );
                let again = reader.next_frame();
                assert!(
                    matches!(&again, Err(e2) if e2.to_string() == e.to_string()),
                    "errors must be sticky: {e:?} then {again:?}"
                );
                break Err(e);
            }
        }
    };
    let streamed = stream_all(data);
    if end.is_ok() {
        // What the file reader accepts whole, the stream parser (which checks less: no page
        // sequence numbers) accepts too, with at least the same packets.
        let streamed = streamed.unwrap_or_else(|e| panic!("stream parser refused: {e:?}"));
        assert!(streamed >= frames, "stream parser lost packets");
    }
    Read {
        frames,
        samples,
        end,
    }
}

/// Feeds `data` to the push parser ([`OggOpusStream`]) in pieces whose size comes from the
/// first byte, as a pipe would deliver it. Panics if it breaks a promise: more packets than
/// input bytes, or an error that is not sticky. Returns the packets, or the error.
pub fn stream_all(data: &[u8]) -> Result<usize, SourceError> {
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut stream = OggOpusStream::new();
    let mut packets = 0_usize;
    let mut result = Ok(());
    for piece in data.chunks(chunk) {
        if let Err(e) = stream.push(piece) {
            result = Err(e);
            break;
        }
        while let Some(frame) = stream.pop() {
            packets += 1;
            assert!(!frame.data.is_empty());
            assert!(packets <= data.len(), "more packets than input bytes");
        }
    }
    let result = result.and_then(|()| stream.finish());
    if let Err(e) = &result {
        assert!(
            matches!(e, SourceError::Ogg { .. } | SourceError::NotOpus { .. }),
            "stream errors are Ogg or NotOpus: {e:?}"
        );
        let again = stream.push(&[]);
        assert!(
            matches!(&again, Err(e2) if e2 == e),
            "errors must be sticky: {e:?} then {again:?}"
        );
    }
    result.map(|()| packets)
}
