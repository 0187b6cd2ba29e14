//! PCM hooks for applications that bring their own audio: [`Engine::set_pcm_sink`] and the
//! shard's table of sinks.
//!
//! The outgoing half needs no runtime support: [`StreamSource::pcm`](crate::StreamSource::pcm)
//! makes a [`PcmSource`](ringcast_core::media::PcmSource) that the call pulls like any other
//! source. The incoming half needs the shard: it owns each call's received Opus packets, so it
//! decodes them for the calls that asked for PCM (and only those: decoding costs CPU).

use std::collections::HashMap;

use ringcast_core::endpoint::{CallId, Endpoint};
use ringcast_core::media::{PcmReceiver, PcmSink, PcmSinkConfig, pcm_sink};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::shard::Request;

impl Engine {
    /// Decodes the call's received audio to 16-bit 48 kHz PCM and returns the receiver of the
    /// 20 ms frames ([`PcmFrame`](crate::PcmFrame): speaker SSRC and samples), one libopus
    /// decoder per remote SSRC, up to [`PcmSinkConfig::max_ssrcs`] at once.
    ///
    /// Works whether or not [`EngineBuilder::receive_audio`](crate::EngineBuilder::receive_audio)
    /// is on. Replaces the call's previous sink (whose receiver then disconnects). Dropping the
    /// receiver stops the decoding; so does the end of the call (the receiver disconnects once
    /// drained). Frames the application does not read in time are dropped and counted in
    /// [`PcmReceiver::stats`], as are undecodable packets.
    ///
    /// For a 1:1 call pass the peer's user id, once [`Engine::connect_p2p`] has started it.
    ///
    /// Fails with [`EngineError::ConnectionNotFound`] if the chat has no call, or
    /// [`EngineError::Source`] for a zero capacity or `max_ssrcs`.
    pub fn set_pcm_sink(
        &self,
        chat_id: i64,
        config: &PcmSinkConfig,
    ) -> Result<PcmReceiver, EngineError> {
        let (sink, receiver) = pcm_sink(config)?;
        self.request(self.shard_of(chat_id), |reply| Request::SetPcmSink {
            chat_id,
            sink: Box::new(sink),
            reply,
        })??;
        Ok(receiver)
    }
}

/// A shard's PCM sinks, by chat id. Empty for most engines: one map lookup per received packet.
#[derive(Debug, Default)]
pub(crate) struct PcmSinks {
    sinks: HashMap<i64, PcmSink>,
}

impl PcmSinks {
    /// Attaches `sink` to the call of `chat_id` (a group call, or a 1:1 call by the peer's user
    /// id: the two share one id space), if the endpoint has that call.
    pub(crate) fn attach(
        &mut self,
        endpoint: &Endpoint,
        chat_id: i64,
        sink: PcmSink,
    ) -> Result<(), EngineError> {
        if !endpoint.contains(CallId(chat_id)) {
            return Err(EngineError::ConnectionNotFound(chat_id));
        }
        self.sinks.insert(chat_id, sink);
        Ok(())
    }

    /// Decodes one received Opus packet of `key`'s call (group or 1:1) if it has a sink; drops
    /// a sink whose receiver is gone.
    pub(crate) fn on_audio(&mut self, key: i64, ssrc: u32, seq: u16, payload: &[u8]) {
        let Some(sink) = self.sinks.get_mut(&key) else {
            return;
        };
        sink.push_packet(ssrc, seq, payload);
        if sink.is_closed() {
            self.sinks.remove(&key);
        }
    }

    /// The call is gone: drop its sink, which disconnects the application's receiver.
    pub(crate) fn remove(&mut self, chat_id: i64) {
        self.sinks.remove(&chat_id);
    }
}
