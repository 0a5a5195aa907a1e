//! Ordering the holdout id stream so that every prefix has the holdout's mix.
//!
//! Evaluation scores the *first* `eval_sequences` holdout sequences and an analysis takes the
//! *first* N holdout tokens (`train::eval`, `extract::sequences`). With whole documents one after
//! another, that prefix would be the start of the first held-out novel only, and the unigram
//! plateau would be measured on one book. So rather than changing how sequences are selected,
//! the holdout stream itself is interleaved: each held-out document is cut into pieces of
//! [`HOLDOUT_PIECE_TOKENS`] ids, and pieces are emitted in weighted-fair-queueing order ([`fair_order`]),
//! at two levels: the documents of one source (the novels), then the sources (novels, SOTU,
//! WikiText, …). Interleaving sources rather than documents keeps a source made of many short
//! documents (WikiText articles) at its share in short prefixes, where each of its documents
//! alone would be less than a piece. After any number of pieces each stream has emitted the
//! same fraction of its ids to within one piece, so any prefix has every source's share of the
//! whole holdout (and, within a source, every document's), to within a piece. Each piece ends
//! with the separator, as documents do in the training stream, so a switch is always marked.

/// Ids per piece: two 128-token sequences' worth, small enough that a 16k-token evaluation
/// prefix holds pieces of every source with a share of ≥ ~2%.
pub const HOLDOUT_PIECE_TOKENS: usize = 256;

/// Interleaves held-out documents grouped by source (`sources[s][d]` = ids of document `d` of
/// source `s`, no separators) in pieces of `piece` ids, each followed by `sep`. Deterministic;
/// empty documents contribute nothing.
pub fn interleave_holdout(sources: &[Vec<Vec<u32>>], piece: usize, sep: u32) -> Vec<u32> {
    assert!(piece > 0, "piece size must be positive");
    // Within each source: its documents' pieces, as (document, start, end), in fair order.
    let per_source: Vec<Vec<(usize, usize, usize)>> = sources
        .iter()
        .map(|docs| {
            let chunks: Vec<Vec<(usize, usize)>> = docs.iter().map(|d| (0..d.len()).step_by(piece).map(|a| (a, (a + piece).min(d.len()))).collect()).collect();
            let lengths: Vec<Vec<usize>> = chunks.iter().map(|c| c.iter().map(|(a, b)| b - a).collect()).collect();
            fair_order(&lengths).into_iter().map(|(d, k)| (d, chunks[d][k].0, chunks[d][k].1)).collect()
        })
        .collect();
    // Across sources: each source's ordered pieces form one stream.
    let lengths: Vec<Vec<usize>> = per_source.iter().map(|p| p.iter().map(|(_, a, b)| b - a).collect()).collect();
    let mut out = Vec::with_capacity(lengths.iter().flatten().map(|n| n + 1).sum());
    for (s, k) in fair_order(&lengths) {
        let (d, a, b) = per_source[s][k];
        out.extend_from_slice(&sources[s][d][a..b]);
        out.push(sep);
    }
    out
}

/// Weighted fair queueing of streams of pieces (`streams[i]` = lengths of stream `i`'s pieces,
/// in order): the order as (stream, piece index). Next is the stream whose emitted fraction,
/// counting *half* of its next piece, is smallest (ties to the earlier stream). Counting half a
/// piece puts each piece at its stream's fair position rounded to the nearest piece, rather than
/// always late; a stream shorter than a piece sits in the middle.
pub fn fair_order(streams: &[Vec<usize>]) -> Vec<(usize, usize)> {
    let totals: Vec<u128> = streams.iter().map(|s| s.iter().sum::<usize>() as u128).collect();
    let mut emitted = vec![0u128; streams.len()];
    let mut next = vec![0usize; streams.len()];
    let mut order = Vec::with_capacity(streams.iter().map(Vec::len).sum());
    loop {
        let mut best: Option<(usize, u128, u128)> = None; // (stream, numerator, denominator)
        for (i, s) in streams.iter().enumerate() {
            let Some(&len) = s.get(next[i]) else { continue };
            let (num, den) = (2 * emitted[i] + len as u128, 2 * totals[i].max(1));
            // num/den < best_num/best_den, in integers so the order is exact.
            if best.is_none_or(|(_, bn, bd)| num * bd < bn * den) {
                best = Some((i, num, den));
            }
        }
        let Some((i, _, _)) = best else { return order };
        order.push((i, next[i]));
        emitted[i] += streams[i][next[i]] as u128;
        next[i] += 1;
    }
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
        let out = interleave_holdout(std::slice::from_ref(&d), 4, SEP);
        for (k, doc) in d.iter().enumerate() {
            assert_eq!(out.iter().filter(|&&t| t == k as u32 + 1).count(), doc.len());
        }
        // ceil(10/4) + ceil(3/4) + ceil(7/4) pieces, each closed by one separator.
        assert_eq!(out.iter().filter(|&&t| t == SEP).count(), 3 + 1 + 2);
        assert_eq!(out.last(), Some(&SEP));
        assert_eq!(interleave_holdout(std::slice::from_ref(&d), 4, SEP), out, "deterministic");
        assert_eq!(interleave_holdout(&[vec![d[0].clone()], vec![d[1].clone(), d[2].clone()], vec![d[3].clone()]], 4, SEP).len(), out.len());
        assert!(interleave_holdout(&[], 4, SEP).is_empty());
    }

    #[test]
    fn every_prefix_has_each_documents_share_to_within_one_piece() {
        let lengths = [5000, 300, 1200, 90, 2600];
        let total: usize = lengths.iter().sum();
        let piece = 16;
        let out = interleave_holdout(&[docs(&lengths)], piece, SEP);
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
        let out = interleave_holdout(&[docs(&[1000, 10])], piece, SEP);
        let middle = out.iter().filter(|&&t| t != SEP).position(|&t| t == 2).unwrap();
        assert!((490..520).contains(&middle), "{middle}");
    }

    #[test]
    fn a_source_of_many_short_documents_keeps_its_share_in_short_prefixes() {
        // Source 0: one 9,000-id document; source 1: ten 100-id documents (10% of the ids), each
        // shorter than a piece. Its first piece (100 ids) is due at 50/1000 · 10,000 ≈ 500 ids;
        // interleaving documents rather than sources would put each of them near id 5,000.
        let short: Vec<Vec<u32>> = (0..10).map(|k| vec![k + 2; 100]).collect();
        let out = interleave_holdout(&[vec![vec![1; 9000]], short], 128, SEP);
        let real: Vec<u32> = out.into_iter().filter(|&t| t != SEP).collect();
        let first = real.iter().position(|&t| t >= 2).unwrap();
        assert!((450..560).contains(&first), "{first}");
        let in_prefix = real[..2000].iter().filter(|&&t| t >= 2).count();
        assert!((100..=300).contains(&in_prefix), "{in_prefix}");
    }
}
