//! Presentation (screen share): a chat's second connection to the SFU.
//!
//! As ntgcalls' `init_presentation` does (telegram-signaling.md §2.7), a presentation is a
//! second, independent call in the same chat: its own ICE credentials, DTLS certificate and
//! SSRCs, joined with `phone.joinGroupCallPresentation`. Its join payload announces a video
//! track of two simulcast layers (a `SIM` group, an `FID` group per layer) and sends layer 0;
//! it carries no audio. The SFU's answer is used for the transport and video; its audio
//! payload types are the main connection's (ntgcalls copies them).
//!
//! Inside the engine a presentation is a call whose id is the chat id with bit 62 flipped
//! ([`presentation_id`]): Telegram's chat and user ids are far below 2^62 in magnitude, so the
//! two never meet, and [`split_call_id`] tells them apart. Its events carry the chat id with
//! [`EngineEvent::presentation`](crate::EngineEvent::presentation) set.

use std::collections::HashMap;
use std::sync::Mutex;

use ringcast_core::media::video::VideoCodec;
use ringcast_core::signaling::group::{JoinResponse, MediaDescription};

use super::{CallInfo, Engine};
use crate::error::EngineError;
use crate::shard::Request;
use crate::sync::lock;

/// The bit that turns a chat id into its presentation's id inside the engine.
const PRESENTATION_BIT: i64 = 1 << 62;

/// The engine-internal id of `chat_id`'s presentation connection.
pub(crate) fn presentation_id(chat_id: i64) -> i64 {
    chat_id ^ PRESENTATION_BIT
}

/// The chat id of an engine-internal call id, and whether the call is that chat's
/// presentation. For every id below 2^62 in magnitude bits 62 and 63 are equal; a
/// presentation's differ.
pub(crate) fn split_call_id(id: i64) -> (i64, bool) {
    if ((id >> 62) ^ (id >> 63)) & 1 == 1 {
        (id ^ PRESENTATION_BIT, true)
    } else {
        (id, false)
    }
}

/// Refuses ids the presentation mapping could misread (|id| ≥ 2^62; Telegram's are far
/// smaller).
pub(crate) fn check_chat_id(chat_id: i64) -> Result<(), EngineError> {
    if split_call_id(chat_id).1 {
        return Err(EngineError::InvalidConfig(
            "chat ids must be below 2^62 in magnitude",
        ));
    }
    Ok(())
}

/// The audio descriptions of the main connections' answers, copied into their chats'
/// presentation answers.
#[derive(Debug, Default)]
pub(crate) struct MainAudio(Mutex<HashMap<i64, MediaDescription>>);

impl MainAudio {
    pub(crate) fn remember(&self, chat_id: i64, response: &JoinResponse) {
        let mut map = lock(&self.0);
        match &response.audio {
            Some(audio) => {
                map.insert(chat_id, audio.clone());
            }
            None => {
                map.remove(&chat_id);
            }
        }
    }

    pub(crate) fn forget(&self, chat_id: i64) {
        lock(&self.0).remove(&chat_id);
    }

    fn get(&self, chat_id: i64) -> Option<MediaDescription> {
        lock(&self.0).get(&chat_id).cloned()
    }
}

impl Engine {
    /// Opens the chat's presentation (screen share) connection and returns its join payload
    /// (the `params` of `phone.joinGroupCallPresentation`): a second call with its own ICE
    /// credentials, DTLS certificate and SSRCs, announcing two video layers of `codec` (see
    /// [the module docs](self)). Show something on it with
    /// [`Engine::set_presentation_source`] or [`Engine::set_presentation_writer`].
    ///
    /// # Errors
    /// [`EngineError::ConnectionNotFound`] without a main call for `chat_id`;
    /// [`EngineError::ConnectionExists`] if the chat already presents.
    pub fn init_presentation(
        &self,
        chat_id: i64,
        codec: VideoCodec,
    ) -> Result<String, EngineError> {
        check_chat_id(chat_id)?;
        self.call_info(chat_id)?;
        let mut config = self.call_config()?;
        config.video = Some(codec);
        config.video_layers = 2;
        let id = presentation_id(chat_id);
        self.request(self.shard_of(id), |reply| Request::Create {
            chat_id: id,
            config,
            reply,
        })?
        .map_err(|e| match e {
            EngineError::ConnectionExists(_) => EngineError::ConnectionExists(chat_id),
            e => e,
        })
    }

    /// Applies the SFU's answer to the presentation (`updateGroupCallConnection` with
    /// `presentation = true`) and starts connecting; the audio payload types are taken from
    /// the main connection's answer. The outcome arrives as
    /// [`EventKind::ConnectionChanged`](crate::EventKind::ConnectionChanged) with
    /// [`EngineEvent::presentation`](crate::EngineEvent::presentation) set.
    pub fn connect_presentation(
        &self,
        chat_id: i64,
        response_json: &str,
    ) -> Result<(), EngineError> {
        let mut response = JoinResponse::parse(response_json.as_bytes())?;
        if let Some(audio) = self.main_audio.get(chat_id) {
            response.audio = Some(audio);
        }
        let id = presentation_id(chat_id);
        self.request(self.shard_of(id), |reply| Request::Connect {
            chat_id: id,
            response: Box::new(response),
            reply,
        })?
        .map_err(|e| not_found_as(e, chat_id))
    }

    /// Shows `source` on the presentation, encoded as `params` say (as
    /// [`Engine::set_video_source`] does for the camera; `params.codec` must be the one the
    /// presentation was opened with).
    pub fn set_presentation_source(
        &self,
        chat_id: i64,
        source: crate::MediaSource,
        params: crate::VideoParams,
    ) -> Result<(), EngineError> {
        let source = self.video.open(source, params)?;
        self.presentation_command(chat_id, ringcast_core::Command::SetVideoSource(source))
    }

    /// Shows what `writer` is given on the presentation (ntgcalls' `EXTERNAL` screen).
    pub fn set_presentation_writer(
        &self,
        chat_id: i64,
        writer: &crate::VideoWriter,
    ) -> Result<(), EngineError> {
        let source = self.video.open_writer(writer);
        self.presentation_command(chat_id, ringcast_core::Command::SetVideoSource(source))
    }

    /// Pauses (`true`) or resumes the presentation's video (ntgcalls' `presentation_paused`).
    pub fn pause_presentation(&self, chat_id: i64, paused: bool) -> Result<(), EngineError> {
        let command = if paused {
            ringcast_core::Command::StopVideo
        } else {
            ringcast_core::Command::StartVideo
        };
        self.presentation_command(chat_id, command)
    }

    /// Ends the presentation connection; the main call goes on.
    pub fn stop_presentation(&self, chat_id: i64) -> Result<(), EngineError> {
        self.presentation_command(chat_id, ringcast_core::Command::Stop)
    }

    /// The presentation's state, media state and counters.
    pub fn presentation_info(&self, chat_id: i64) -> Result<CallInfo, EngineError> {
        let id = presentation_id(chat_id);
        let mut info = self
            .request(self.shard_of(id), |reply| Request::Info {
                chat_id: id,
                reply,
            })?
            .ok_or(EngineError::ConnectionNotFound(chat_id))?;
        info.chat_id = chat_id;
        Ok(info)
    }

    fn presentation_command(
        &self,
        chat_id: i64,
        command: ringcast_core::Command,
    ) -> Result<(), EngineError> {
        let id = presentation_id(chat_id);
        self.request(self.shard_of(id), |reply| Request::Command {
            chat_id: id,
            command,
            reply,
        })?
        .map_err(|e| not_found_as(e, chat_id))
    }
}

/// Errors about the presentation's internal id name the chat.
fn not_found_as(e: EngineError, chat_id: i64) -> EngineError {
    match e {
        EngineError::ConnectionNotFound(_) => EngineError::ConnectionNotFound(chat_id),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presentation_ids_map_back_and_never_meet_chat_ids() {
        for chat in [
            1,
            -1,
            0,
            42,
            -100_123_456_789,
            1 << 52,
            -(1 << 52),
            (1 << 62) - 1,
        ] {
            let id = presentation_id(chat);
            assert_ne!(id, chat);
            assert_eq!(split_call_id(id), (chat, true), "{chat}");
            assert_eq!(split_call_id(chat), (chat, false), "{chat}");
            assert!(check_chat_id(chat).is_ok());
        }
        assert!(check_chat_id(1 << 62).is_err());
        assert!(check_chat_id(i64::MIN).is_err());
    }
}
