//! Recordings of feeds (`pmargin record`, `pmargin replay --feeds`): JSON lines. The first line
//! holds the `feeds.toml` the capture was made with, so a recording replays on its own; each
//! other line is one message as received: `{"recv_ms": ..., "feed": "deribit", "text": "..."}`.

use crate::config::FeedsConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub pmargin_feeds_recording: u32,
    pub feeds_toml: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub recv_ms: i64,
    pub feed: String,
    pub text: String,
}

pub const VERSION: u32 = 1;

pub fn header(feeds_toml: &str) -> String {
    serde_json::to_string(&Header {
        pmargin_feeds_recording: VERSION,
        feeds_toml: feeds_toml.to_string(),
    })
    .unwrap_or_default()
}

pub fn line(recv_ms: i64, feed: &str, text: &str) -> String {
    serde_json::to_string(&Line {
        recv_ms,
        feed: feed.to_string(),
        text: text.to_string(),
    })
    .unwrap_or_default()
}

/// A recording read back: its configuration and its messages, each with its feed's index.
pub struct Recording {
    pub config: FeedsConfig,
    pub feeds_toml: String,
    pub messages: Vec<(usize, Line)>,
}

/// Reads a recording; the error names the file and the line.
pub fn read(file: &str, text: &str) -> Result<Recording, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines
        .next()
        .ok_or_else(|| format!("{file}: empty recording"))?;
    let header: Header = serde_json::from_str(first)
        .map_err(|e| format!("{file}:1: not a feeds recording header ({e})"))?;
    if header.pmargin_feeds_recording != VERSION {
        return Err(format!(
            "{file}:1: recording version {} (this build reads {VERSION})",
            header.pmargin_feeds_recording
        ));
    }
    let config = FeedsConfig::parse(&format!("{file}:1 feeds_toml"), &header.feeds_toml)?;
    let mut messages = Vec::new();
    for (i, l) in lines {
        let line: Line = serde_json::from_str(l).map_err(|e| format!("{file}:{}: {e}", i + 1))?;
        let feed = config
            .feeds
            .iter()
            .position(|f| f.name == line.feed)
            .ok_or_else(|| {
                format!(
                    "{file}:{}: `feed` {} is not in the recording's feeds",
                    i + 1,
                    line.feed
                )
            })?;
        messages.push((feed, line));
    }
    Ok(Recording {
        config,
        feeds_toml: header.feeds_toml,
        messages,
    })
}
