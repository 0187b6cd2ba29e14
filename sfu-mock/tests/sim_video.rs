//! Video through the deterministic simulator: VP8 camera tracks against the in-process SFU
//! over a network that loses 5 % of datagrams both ways. str0m at the SFU NACKs what is lost,
//! the calls resend it on their RTX streams, the SFU asks for key frames when a frame stays
//! broken, and its reassembly (a decoder's view) keeps counting decodable frames throughout.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringcast_core::SourceError;
use ringcast_core::media::ToneSource;
use ringcast_core::media::video::{VideoCodec, VideoFrame, VideoPoll, VideoSource};
use ringcast_core::sim::{NetConfig, World, seed_from_env, sim_crypto};
use sfu_mock::server::generate_cert;
use sfu_mock::video::VideoStats;
use sfu_mock::{Sfu, SfuConfig};

const SFU_ADDR: &str = "198.19.0.1:3478";

/// A stand-in for an in-process encoder: 30 fps VP8-shaped frames (a key frame header with
/// the picture size every 30th frame, or when asked; 2-6 packets each), deterministic.
struct SyntheticVp8 {
    n: u64,
    keyframe_asked: bool,
    rng: fastrand::Rng,
}

impl VideoSource for SyntheticVp8 {
    fn codec(&self) -> VideoCodec {
        VideoCodec::Vp8
    }

    fn next_frame(&mut self) -> Result<VideoPoll, SourceError> {
        let key = self.n.is_multiple_of(30) || std::mem::take(&mut self.keyframe_asked);
        self.n += 1;
        let len = self.rng.usize(2_000..6_000);
        let mut data = vec![0u8; len];
        self.rng.fill(&mut data);
        if key {
            data[..10]
                .copy_from_slice(&[0x50, 0x2d, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        } else {
            data[0] |= 1;
        }
        Ok(VideoPoll::Frame(VideoFrame::packetize(
            VideoCodec::Vp8,
            &data,
            3_000,
        )?))
    }

    fn request_keyframe(&mut self) {
        self.keyframe_asked = true;
    }
}

fn video_stats(w: &World<Sfu>, chat: i64) -> VideoStats {
    let stats = w.sfu().stats();
    let (_, list) = stats.iter().find(|(c, _)| *c == chat).unwrap();
    list[0].video.unwrap()
}

#[test]
fn video_recovers_through_five_percent_loss() {
    let seed = seed_from_env(11);
    eprintln!("seed {seed} (replay with RINGCAST_SIM_SEED={seed})");
    let epoch = Instant::now();
    let addr: SocketAddr = SFU_ADDR.parse().unwrap();
    let mut config = SfuConfig::new(addr, seed, generate_cert().unwrap());
    config.crypto = Some(sim_crypto(seed ^ 1));
    config.forward_audio = false;
    let sfu = Sfu::new(epoch, config);
    let net = NetConfig {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(5),
        loss: 0.05,
        duplicate: 0.0,
    };
    let mut w = World::new(seed, epoch, net, sfu, generate_cert().unwrap());
    let calls = 4;
    for chat in 1..=calls {
        let video = SyntheticVp8 {
            n: 0,
            keyframe_asked: false,
            rng: fastrand::Rng::with_seed(seed ^ chat as u64),
        };
        w.add_video_call(
            chat,
            Box::new(ToneSource::new(440.0, None).unwrap()),
            Box::new(video),
        )
        .unwrap();
    }
    w.run_for(Duration::from_secs(10));
    let mid: Vec<VideoStats> = (1..=calls).map(|c| video_stats(&w, c)).collect();
    w.run_for(Duration::from_secs(10));
    for chat in 1..=calls {
        let (a, b) = (mid[chat as usize - 1], video_stats(&w, chat));
        eprintln!("chat {chat}: at 10 s {a:?}\n        at 20 s {b:?}");
        assert_eq!((b.width, b.height), (640, 480), "chat {chat}");
        // 300 frames were due in the second half: nearly all decodable despite the loss.
        let decodable = b.decodable_frames - a.decodable_frames;
        assert!(
            decodable >= 270,
            "chat {chat}: {decodable} decodable frames in 10 s"
        );
        // The network lost ~5 % of them; what stays lost after NACK and RTX is a few.
        assert!(
            b.lost * 200 <= b.packets,
            "chat {chat}: {} of {} packets stayed lost",
            b.lost,
            b.packets
        );
        assert!(
            b.incomplete_frames <= 10,
            "chat {chat}: {} incomplete",
            b.incomplete_frames
        );
    }
    let net = w.net_stats();
    assert!(net.lost > 100, "the network lost {} datagrams", net.lost);
}
