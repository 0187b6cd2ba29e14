//! RTCP packets built byte by byte, well-formed or not: what a hostile peer that holds the
//! SRTCP keys can make a call read. For tests and fault injection (`tests::hostile`, sfu-mock's
//! `Misbehaviour::HostileRtcp`); protect the result with the sender's keys (our str0m patch's
//! `DirectApi::protect_rtcp_raw`). Nothing here validates anything: a caller that wants a
//! length that disagrees with the contents gets one.

/// One RTCP packet: version 2, `count` (the RC or FMT field, 5 bits), packet type `pt`, then
/// `body`. The length field is the body's length in 32-bit words (RFC 3550 §6.4.1) unless
/// `length` overrides it.
pub fn packet(count: u8, pt: u8, body: &[u8], length: Option<u16>) -> Vec<u8> {
    let words = length.unwrap_or((body.len() / 4) as u16);
    let mut p = vec![0x80 | (count & 0x1f), pt];
    p.extend_from_slice(&words.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// An empty receiver report from `sender`: how a compound packet starts (RFC 3550 §6.1).
pub fn rr_empty(sender: u32) -> Vec<u8> {
    packet(0, 201, &sender.to_be_bytes(), None)
}

/// A receiver report from `sender` with `blocks` report blocks (at most 31 fit the count
/// field) about `about`, each claiming every packet lost.
pub fn rr(sender: u32, blocks: u8, about: u32) -> Vec<u8> {
    let mut b = sender.to_be_bytes().to_vec();
    for _ in 0..blocks {
        b.extend_from_slice(&about.to_be_bytes());
        // Fraction lost 255, cumulative lost at its maximum, the rest arbitrary.
        b.extend_from_slice(&[0xff, 0x7f, 0xff, 0xff]);
        b.extend_from_slice(&[0xff; 16]);
    }
    packet(blocks, 201, &b, None)
}

/// Sender and media SSRC, the start of every feedback message (RFC 4585 §6.1).
pub fn feedback_ssrcs(sender: u32, media: u32) -> Vec<u8> {
    let mut b = sender.to_be_bytes().to_vec();
    b.extend_from_slice(&media.to_be_bytes());
    b
}

/// A generic NACK (RFC 4585 §6.2.1) from `sender` for `media` with `(pid, blp)` items.
pub fn nack(sender: u32, media: u32, items: impl IntoIterator<Item = (u16, u16)>) -> Vec<u8> {
    let mut b = feedback_ssrcs(sender, media);
    for (pid, blp) in items {
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(&blp.to_be_bytes());
    }
    packet(1, 205, &b, None)
}

/// A PLI (RFC 4585 §6.3.1) from `sender` for `media`.
pub fn pli(sender: u32, media: u32) -> Vec<u8> {
    packet(1, 206, &feedback_ssrcs(sender, media), None)
}

/// A FIR (RFC 5104 §4.3.1) from `sender` for `media`, command sequence number `seq`.
pub fn fir(sender: u32, media: u32, seq: u8) -> Vec<u8> {
    let mut b = feedback_ssrcs(sender, 0);
    b.extend_from_slice(&media.to_be_bytes());
    b.extend_from_slice(&[seq, 0, 0, 0]);
    packet(4, 206, &b, None)
}

/// A REMB (draft-alvestrand-rmcat-remb) from `sender` of `bitrate` bits per second (at most
/// 2^18 - 1: the exponent is 0) for `ssrcs`.
pub fn remb(sender: u32, bitrate: u32, ssrcs: &[u32]) -> Vec<u8> {
    let mut b = feedback_ssrcs(sender, 0);
    b.extend_from_slice(b"REMB");
    b.push(ssrcs.len() as u8);
    b.extend_from_slice(&bitrate.min(0x3_ffff).to_be_bytes()[1..]);
    for s in ssrcs {
        b.extend_from_slice(&s.to_be_bytes());
    }
    packet(15, 206, &b, None)
}

/// An RTCP compound: an empty receiver report from `sender`, then `parts`.
pub fn compound(sender: u32, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut c = rr_empty(sender);
    for p in parts {
        c.extend_from_slice(p);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_count_words_after_the_header() {
        let n = nack(1, 2, [(10, 0xffff), (27, 0)]);
        assert_eq!(n.len(), 4 + 8 + 8);
        assert_eq!(u16::from_be_bytes([n[2], n[3]]), 4);
        assert_eq!(n[0], 0x81);
        let r = rr(1, 31, 2);
        assert_eq!(r.len(), 4 + 4 + 31 * 24);
        assert_eq!(r[0] & 0x1f, 31);
        assert_eq!(u16::from_be_bytes([r[2], r[3]]) as usize, (r.len() - 4) / 4);
        assert_eq!(packet(1, 201, &[0; 8], Some(0xffff))[2..4], [0xff, 0xff]);
        let c = compound(7, &[pli(7, 8), remb(7, 0, &[8])]);
        assert_eq!(c.len(), 8 + 12 + 24);
    }
}
