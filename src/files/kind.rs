//! Deciding what an uploaded file is: its message kind and content type from its bytes (magic
//! numbers), checked against the name's extension, and the deny list. Also the file name clean-up.
//!
//! The rule when name and content disagree: **the content wins**, because it is what a viewer's
//! software will actually parse. A PNG called `report.pdf` is an IMAGE served as `image/png`.
//! Files whose content is recognised as an executable or script are refused whenever that type is
//! on the deny list, whatever they are called (`cat.jpg` holding an ELF binary is refused), and
//! so are names with a denied extension, whatever they hold. A name claiming a format that has a
//! signature (`.png`, `.pdf`, `.zip`, …) over content that does not carry it is a plain FILE
//! served as `application/octet-stream`. Formats without a signature (`.txt`, `.csv`, …) are
//! taken by their extension.
use std::collections::HashSet;

use crate::error::{AppError, AppResult};

/// What a message carrying a file is, as stored in `messages.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Image,
    Video,
    Audio,
    Document,
    Archive,
    File,
}

impl FileKind {
    /// The stored name (the GraphQL `MessageKind`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Image => "IMAGE",
            FileKind::Video => "VIDEO",
            FileKind::Audio => "AUDIO",
            FileKind::Document => "DOCUMENT",
            FileKind::Archive => "ARCHIVE",
            FileKind::File => "FILE",
        }
    }
}

/// How many leading bytes the content sniffing looks at (enough for Office Open XML and
/// OpenDocument, which are recognised by the first entry of their zip).
pub const SNIFF_BYTES: usize = 8192;

/// Extensions of formats whose content carries a recognisable signature: a name with one of these
/// over content that does not match is lying.
const SIGNED_FORMATS: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff", "ico", "heic", "heif", "avif",
    "jxl", "psd", "mp4", "m4v", "mov", "avi", "webm", "mkv", "wmv", "flv", "mpg", "mpeg", "mp3",
    "wav", "ogg", "oga", "opus", "m4a", "flac", "amr", "aiff", "mid", "midi", "pdf", "doc", "docx",
    "xls", "xlsx", "ppt", "pptx", "odt", "ods", "odp", "epub", "rtf", "zip", "rar", "7z", "tar",
    "gz", "tgz", "bz2", "xz", "zst",
];

/// Message kind by extension (for detected types, the detected extension).
fn kind_of_extension(ext: &str) -> FileKind {
    match ext {
        "jpg" | "jpeg" | "png" | "gif" | "webp" | "bmp" | "tif" | "tiff" | "ico" | "heic"
        | "heif" | "avif" | "jxl" | "jp2" | "psd" | "cr2" | "jxr" | "svg" => FileKind::Image,
        "mp4" | "m4v" | "mov" | "avi" | "webm" | "mkv" | "wmv" | "flv" | "mpg" | "mpeg" | "3gp" => {
            FileKind::Video
        }
        "mp3" | "wav" | "ogg" | "oga" | "opus" | "m4a" | "aac" | "flac" | "amr" | "aiff"
        | "mid" | "midi" | "ape" | "dsf" | "wma" => FileKind::Audio,
        "pdf" | "doc" | "docx" | "xls" | "xlsx" | "ppt" | "pptx" | "odt" | "ods" | "odp"
        | "rtf" | "txt" | "csv" | "tsv" | "md" | "json" | "xml" | "epub" | "mobi" | "ps" => {
            FileKind::Document
        }
        "zip" | "rar" | "7z" | "tar" | "gz" | "tgz" | "bz2" | "bz3" | "xz" | "zst" | "lz"
        | "lz4" | "cab" | "cpio" => FileKind::Archive,
        _ => FileKind::File,
    }
}

/// Content types for formats with no signature, which are taken by their extension.
fn unsigned_content_type(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "txt" | "log" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "tsv" => "text/tab-separated-values; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "aac" => "audio/aac",
        "3gp" => "video/3gpp",
        "wma" => "audio/x-ms-wma",
        _ => return None,
    })
}

/// Generic binary, for anything not recognised.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// What an upload was classified as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub kind: FileKind,
    pub content_type: String,
}

/// The deny list, lower-cased, without dots.
#[derive(Debug, Clone)]
pub struct DenyList(HashSet<String>);

impl DenyList {
    /// From the configured extensions (`exe`, `.EXE` and ` exe ` all mean the same).
    pub fn new(extensions: &[String]) -> Self {
        Self(
            extensions
                .iter()
                .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .collect(),
        )
    }

    fn denies(&self, ext: &str) -> bool {
        self.0.contains(ext)
    }
}

/// The lower-case extension of a (sanitised) file name, if it has one.
pub fn extension(filename: &str) -> Option<String> {
    let (stem, ext) = filename.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// Classifies a file from its name and its first bytes, or refuses it (BAD_USER_INPUT).
pub fn classify(filename: &str, head: &[u8], deny: &DenyList) -> AppResult<Classified> {
    let name_ext = extension(filename);
    if let Some(ext) = &name_ext
        && deny.denies(ext)
    {
        return Err(AppError::bad_input(format!(
            "files of type .{ext} are not accepted"
        )));
    }
    // A generic OLE container ("msi" to `infer`) is also what old Office files are when `infer`
    // cannot tell which: it says nothing reliable, so it is treated as unrecognised content.
    let detected = infer::get(head).filter(|t| t.extension() != "msi");
    if let Some(found) = detected {
        let ext = found.extension();
        if deny.denies(ext) {
            return Err(AppError::bad_input(format!(
                "the file's content is of a type that is not accepted ({ext})"
            )));
        }
        let kind = match ext {
            // Web pages are served as attachments, never rendered as a document of ours.
            "html" => FileKind::File,
            other => kind_of_extension(other),
        };
        return Ok(Classified {
            kind,
            content_type: found.mime_type().to_owned(),
        });
    }
    let Some(ext) = name_ext else {
        return Ok(unrecognised());
    };
    if is_ole(head) && matches!(ext.as_str(), "doc" | "xls" | "ppt") {
        let content_type = match ext.as_str() {
            "doc" => "application/msword",
            "xls" => "application/vnd.ms-excel",
            _ => "application/vnd.ms-powerpoint",
        };
        return Ok(Classified {
            kind: FileKind::Document,
            content_type: content_type.to_owned(),
        });
    }
    if SIGNED_FORMATS.contains(&ext.as_str()) {
        // The name claims a format whose signature is missing: the extension lies.
        return Ok(unrecognised());
    }
    match unsigned_content_type(&ext) {
        Some(content_type) => Ok(Classified {
            kind: kind_of_extension(&ext),
            content_type: content_type.to_owned(),
        }),
        None => Ok(unrecognised()),
    }
}

fn unrecognised() -> Classified {
    Classified {
        kind: FileKind::File,
        content_type: OCTET_STREAM.to_owned(),
    }
}

fn is_ole(head: &[u8]) -> bool {
    head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1])
}

/// Longest file name kept, in bytes.
const MAX_FILENAME_BYTES: usize = 200;

/// Reduces a client's file name to something safe to store and show: the last path component
/// (either separator), without control, bidirectional or invisible characters (dropped, not
/// refused: the file is still accepted, under the cleaned name; see [`crate::text`]), trimmed, at
/// most 200 bytes, never `.`/`..`. The name is never used as a storage path (objects are keyed by
/// a fresh uuid); this keeps it harmless in `Content-Disposition`, in clients that might save it
/// as is, and to readers: `invoice\u{202E}fdp.html` cannot pass for "invoicelmth.pdf".
pub fn sanitize_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = crate::text::strip_from_name(base)
        .trim()
        .trim_end_matches(['.', ' '])
        .to_owned();
    let mut name = cleaned;
    if name.len() > MAX_FILENAME_BYTES {
        // Keep the extension, cut the stem on a character boundary.
        let ext = extension(&name).filter(|e| e.len() <= 16);
        let keep = MAX_FILENAME_BYTES - ext.as_ref().map_or(0, |e| e.len() + 1);
        let mut cut = keep;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let tail = ext.map(|e| format!(".{e}")).unwrap_or_default();
        name = format!("{}{tail}", &name[..cut]);
    }
    if name.is_empty() || name.chars().all(|c| c == '.') {
        "file".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny() -> DenyList {
        DenyList::new(&["exe".into(), ".SH".into(), "elf".into()])
    }

    #[test]
    fn file_names_are_reduced_to_a_harmless_basename() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitize_filename(".."), "file");
        assert_eq!(sanitize_filename("a/"), "file");
        assert_eq!(sanitize_filename("  r\u{0}é\nsumé.pdf  "), "résumé.pdf");
        assert_eq!(
            sanitize_filename("invoice\u{202E}fdp.html"),
            "invoicefdp.html"
        );
        assert_eq!(sanitize_filename("\u{200B}\u{FEFF}.pdf\u{2066}"), ".pdf");
        assert_eq!(sanitize_filename("\u{3164}\u{115F}"), "file");
        let long = format!("{}.pdf", "é".repeat(300));
        let cut = sanitize_filename(&long);
        assert!(
            cut.len() <= MAX_FILENAME_BYTES && cut.ends_with(".pdf"),
            "{cut}"
        );
    }

    #[test]
    fn content_wins_over_the_extension() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        let c = classify("report.pdf", png, &deny()).unwrap();
        assert_eq!(
            (c.kind, c.content_type.as_str()),
            (FileKind::Image, "image/png")
        );
        let c = classify("photo.png", b"just some text", &deny()).unwrap();
        assert_eq!(
            (c.kind, c.content_type.as_str()),
            (FileKind::File, OCTET_STREAM)
        );
        let c = classify("notes.txt", b"just some text", &deny()).unwrap();
        assert_eq!(c.kind, FileKind::Document);
    }

    #[test]
    fn denied_names_and_denied_contents_are_refused() {
        assert!(classify("setup.EXE", b"hello", &deny()).is_err());
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(64, 0);
        assert!(classify("cat.jpg", &elf, &deny()).is_err());
        assert!(classify("notes.txt", b"#!/bin/sh\necho hi\n", &deny()).is_err());
        assert!(classify("archive.tar.gz", b"\x1f\x8b\x08\0", &deny()).is_ok());
    }
}
