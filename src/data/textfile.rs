//! Reading one corpus input file into text: plain UTF-8, or gzip (`.gz`, decompressed while it is
//! read, through `flate2`), fingerprinted on the way so the file is read once and its compressed
//! bytes are never held in memory.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

use crate::fingerprint::Fnv1a64;

/// One file that went into the corpus, identified well enough to notice it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: PathBuf,
    /// [`crate::fingerprint::fnv1a64`] of the file's bytes as stored (compressed for `.gz`), 16 hex digits.
    pub fnv1a64: String,
    /// Size of the file as stored.
    pub bytes: u64,
}

/// Whether `path` is read through the gzip decoder: by its name, as `gzip` itself decides.
pub fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Reads a whole file as text (decompressing `.gz`) and describes the file as stored. Errors are
/// one line naming the file: not found, corrupt or truncated gzip, not UTF-8, no text.
pub fn read_text_file(path: &Path) -> Result<(InputFile, String)> {
    let mut counted = Fingerprinting::open(path)?;
    let mut bytes = Vec::new();
    if is_gzip(path) {
        // Multi-member so that concatenated gzip files (`cat a.gz b.gz`) read whole, as `zcat` does.
        MultiGzDecoder::new(&mut counted)
            .read_to_end(&mut bytes)
            .map_err(|e| anyhow!("{}: not a valid gzip file ({e}); re-compress it or give the plain text", path.display()))?;
    } else {
        counted.read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    }
    // Whatever the decoder left unread (trailing garbage) still belongs to the fingerprint.
    let described = counted.finish(path)?;
    Ok((described, into_text(path, bytes)?))
}

/// Describes a file as stored without keeping its bytes.
pub fn describe_file(path: &Path) -> Result<InputFile> {
    Fingerprinting::open(path)?.finish(path)
}

/// The text (the buffer is reused, not copied), or an error that says which file and where it
/// stops being UTF-8 (an offset into the decompressed text for `.gz`).
fn into_text(path: &Path, bytes: Vec<u8>) -> Result<String> {
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let what = if is_gzip(path) { "decompressed text is not valid UTF-8" } else { "not valid UTF-8" };
        anyhow!("{}: {what} (first bad byte at offset {at})", path.display())
    })?;
    ensure!(!text.trim().is_empty(), "{}: no text (the file is empty or only whitespace)", path.display());
    Ok(text)
}

/// A reader that hashes and counts the bytes passing through it.
struct Fingerprinting<R> {
    inner: R,
    hash: Fnv1a64,
    bytes: u64,
}

impl Fingerprinting<BufReader<File>> {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self { inner: BufReader::new(file), hash: Fnv1a64::new(), bytes: 0 })
    }

    /// Reads the rest of the file and describes it.
    fn finish(mut self, path: &Path) -> Result<InputFile> {
        io::copy(&mut self, &mut io::sink()).with_context(|| format!("reading {}", path.display()))?;
        Ok(InputFile { path: path.to_path_buf(), fnv1a64: format!("{:016x}", self.hash.finish()), bytes: self.bytes })
    }
}

impl<R: Read> Read for Fingerprinting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::fnv1a64;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn err_text(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn gzip_reads_as_the_plain_text_and_is_fingerprinted_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let text = "Über alles.\nA second line.\n".repeat(1000);
        let plain = dir.path().join("a.txt");
        std::fs::write(&plain, &text).unwrap();
        let packed = gzip(text.as_bytes());
        let gz = dir.path().join("a.txt.gz");
        std::fs::write(&gz, &packed).unwrap();

        let (plain_file, plain_text) = read_text_file(&plain).unwrap();
        let (gz_file, gz_text) = read_text_file(&gz).unwrap();
        assert_eq!(gz_text, plain_text);
        assert_eq!(gz_text, text);
        assert_eq!(plain_file.bytes, text.len() as u64);
        assert_eq!(plain_file.fnv1a64, format!("{:016x}", fnv1a64(text.as_bytes())));
        assert_eq!(gz_file.bytes, packed.len() as u64);
        assert_eq!(gz_file.fnv1a64, format!("{:016x}", fnv1a64(&packed)));
        assert_eq!(describe_file(&gz).unwrap(), gz_file);

        // Two members, as `cat a.gz b.gz > c.gz` makes: both are read.
        let two = dir.path().join("two.gz");
        std::fs::write(&two, [gzip(b"first\n"), gzip(b"second\n")].concat()).unwrap();
        assert_eq!(read_text_file(&two).unwrap().1, "first\nsecond\n");
    }

    #[test]
    fn bad_gzip_is_one_line_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = gzip("some text\n".repeat(100).as_bytes());
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("garbage.gz", b"this is not gzip at all".to_vec(), "not a valid gzip file"),
            ("truncated.gz", good[..good.len() / 2].to_vec(), "not a valid gzip file"),
            (
                "flipped.gz",
                {
                    let mut b = good.clone();
                    let i = b.len() - 6;
                    b[i] ^= 0xff;
                    b
                },
                "not a valid gzip file",
            ),
            ("empty.txt.gz", gzip(b""), "no text"),
            ("latin1.txt.gz", gzip(b"caf\xe9\n"), "decompressed text is not valid UTF-8 (first bad byte at offset 3)"),
        ];
        for (name, bytes, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = err_text(read_text_file(&path));
            assert!(err.contains(name) && err.contains(expected), "{name}: {err}");
            assert!(!err.contains('\n'), "{name}: not one line: {err}");
        }
        let zero = dir.path().join("zero.gz");
        std::fs::write(&zero, b"").unwrap();
        let err = err_text(read_text_file(&zero));
        assert!(err.contains("zero.gz"), "{err}");
    }
}
