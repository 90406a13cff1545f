//! `[knowledge]`: the knowledge API's own bounds.

use super::Problems;
use super::parse::bounded;
use crate::config::settings::KnowledgeSettings;

raw_section! {
    pub(super) struct RawKnowledge {
        max_concurrent_uploads: Option<String>,
    }
}

/// Uploads read at once by default: each may hold a 16 MiB body while it is read and
/// decoded.
const DEFAULT_MAX_CONCURRENT_UPLOADS: u64 = 4;

pub(super) fn knowledge_settings(problems: &mut Problems, raw: &RawKnowledge) -> KnowledgeSettings {
    let uploads = bounded(
        problems,
        "SBA_KNOWLEDGE__MAX_CONCURRENT_UPLOADS",
        raw.max_concurrent_uploads.as_deref(),
        DEFAULT_MAX_CONCURRENT_UPLOADS,
        1..=1_024,
    );
    KnowledgeSettings { max_concurrent_uploads: usize::try_from(uploads).unwrap_or(1) }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn concurrent_uploads_default_to_four_and_are_bounded() {
        assert_eq!(settings_of(&[]).unwrap().knowledge.max_concurrent_uploads, 4);
        let set = settings_of(&[("SBA_KNOWLEDGE__MAX_CONCURRENT_UPLOADS", "16")]).unwrap();
        assert_eq!(set.knowledge.max_concurrent_uploads, 16);
        assert!(settings_of(&[("SBA_KNOWLEDGE__MAX_CONCURRENT_UPLOADS", "0")]).is_err());
    }
}
