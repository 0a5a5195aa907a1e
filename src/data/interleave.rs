//! Ordering the holdout id stream so that every prefix has the holdout's mix.
//!
//! Evaluation scores the *first* `eval_sequences` holdout sequences and an analysis takes the
//! *first* N holdout tokens (`train::eval`, `extract::sequences`). With whole documents one after
//! another, that prefix would be the start of the first held-out novel only, and the unigram
//! plateau would be measured on one book. So rather than changing how sequences are selected,
//! the holdout stream itself is interleaved: each held-out document is cut into pieces of
//! [`HOLDOUT_PIECE_TOKENS`] ids, and pieces are emitted in weighted-fair-queueing order: next is
//! the document whose emitted fraction, counting *half* of its next piece, is smallest (ties to
//! the earlier document). Counting half a piece puts each piece at its document's fair position,
//! rounded to the nearest piece, rather than always late (a source of 1% shows up in the first
//! ~1% · piece ids, not only after a whole piece is due). After any number of pieces each
//! document has emitted the same fraction of its ids to within one piece, so any prefix has every
//! document's share of the whole holdout, to within one piece per document; a document shorter
//! than a piece sits in the middle of the stream. Each piece ends with the separator, as documents do in the training
//! stream, so a switch of document is always marked.

/// Ids per piece: two 128-token sequences' worth, small enough that a 16k-token evaluation
/// prefix holds pieces of every source with a share of ≥ ~2%.
pub const HOLDOUT_PIECE_TOKENS: usize = 256;

/// Interleaves `docs` (each one document's ids, no separators) in pieces of `piece` ids, each
/// piece followed by `sep`. Deterministic; empty documents contribute nothing.
pub fn interleave_pieces(docs: &[Vec<u32>], piece: usize, sep: u32) -> Vec<u32> {
    assert!(piece > 0, "piece size must be positive");
    let total: usize = docs.iter().map(|d| d.len() + d.len().div_ceil(piece)).sum();
    let mut out = Vec::with_capacity(total);
    let mut emitted = vec![0usize; docs.len()];
    while let Some(i) = next_document(docs, &emitted, piece) {
        let end = (emitted[i] + piece).min(docs[i].len());
        out.extend_from_slice(&docs[i][emitted[i]..end]);
        out.push(sep);
        emitted[i] = end;
    }
    out
}

/// The unfinished document whose emitted fraction, counting half of its next piece, is smallest.
fn next_document(docs: &[Vec<u32>], emitted: &[usize], piece: usize) -> Option<usize> {
    let mut best: Option<(usize, u128, u128)> = None; // (index, numerator, denominator)
    for (i, doc) in docs.iter().enumerate() {
        if emitted[i] >= doc.len() {
            continue;
        }
        let next = piece.min(doc.len() - emitted[i]);
        let num = (2 * emitted[i] + next) as u128;
        let den = 2 * doc.len() as u128;
        // num/den < best_num/best_den, in integers so the order is exact.
        if best.is_none_or(|(_, bn, bd)| num * bd < bn * den) {
            best = Some((i, num, den));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEP: u32 = 0;

    /// Document `k`'s ids are all `k + 1`, so a token tells which document it came from.
    fn docs(lengths: &[usize]) -> Vec<Vec<u32>> {
        lengths.iter().enumerate().map(|(k, &n)| vec![k as u32 + 1; n]).collect()
    }

    #[test]
    fn every_id_is_emitted_once_in_document_order_with_a_separator_per_piece() {
        let d = docs(&[10, 3, 0, 7]);
        let out = interleave_pieces(&d, 4, SEP);
        for (k, doc) in d.iter().enumerate() {
            assert_eq!(out.iter().filter(|&&t| t == k as u32 + 1).count(), doc.len());
        }
        // ceil(10/4) + ceil(3/4) + ceil(7/4) pieces, each closed by one separator.
        assert_eq!(out.iter().filter(|&&t| t == SEP).count(), 3 + 1 + 2);
        assert_eq!(out.last(), Some(&SEP));
        assert_eq!(interleave_pieces(&d, 4, SEP), out, "deterministic");
        assert!(interleave_pieces(&[], 4, SEP).is_empty());
    }

    #[test]
    fn every_prefix_has_each_documents_share_to_within_one_piece() {
        let lengths = [5000, 300, 1200, 90, 2600];
        let total: usize = lengths.iter().sum();
        let piece = 16;
        let out = interleave_pieces(&docs(&lengths), piece, SEP);
        let mut seen = vec![0usize; lengths.len()];
        let mut n_real = 0;
        for &t in &out {
            if t == SEP {
                continue;
            }
            seen[t as usize - 1] += 1;
            n_real += 1;
            for (k, &len) in lengths.iter().enumerate() {
                let expected = n_real as f64 * len as f64 / total as f64;
                assert!((seen[k] as f64 - expected).abs() <= 2.0 * piece as f64, "doc {k} after {n_real}: {} vs {expected:.1}", seen[k]);
            }
        }
        // A document appears once half its first piece is due: the 90-id one (1.0%) at
        // 8/90 · 9190 ≈ 817 ids.
        let real: Vec<u32> = out.iter().copied().filter(|&t| t != SEP).collect();
        let first_of = |k: u32| real.iter().position(|&t| t == k).unwrap();
        assert!((790..840).contains(&first_of(4)), "{}", first_of(4));
        assert!(first_of(2) < 300 && first_of(3) < 100 && first_of(5) < 50);
        // A document shorter than a piece sits in the middle.
        let out = interleave_pieces(&docs(&[1000, 10]), piece, SEP);
        let middle = out.iter().filter(|&&t| t != SEP).position(|&t| t == 2).unwrap();
        assert!((490..520).contains(&middle), "{middle}");
    }
}
