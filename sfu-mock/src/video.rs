//! What the SFU learns from a participant's video: the receiver lives in `ringcast_core`
//! ([`ringcast_core::media::video_rx`]), which the engine uses for incoming video too.

pub use ringcast_core::media::video_rx::{
    GIVE_UP_AFTER_FRAMES, PLI_INTERVAL, ReceivedFrame, VideoReceiver, VideoStats,
};
