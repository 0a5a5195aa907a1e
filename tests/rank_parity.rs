//! The streamed f64 Gram path on real hidden states equals numpy's SVD of the stacked matrix
//! (`fixtures/golden/make_hidden_spectra.py`, on the golden transformers hidden states).

use candle_core::Device;
use ndarray::{ArrayView2, Axis};
use repdef::checkpoint::read_safetensors;
use repdef::rank::{var_rank, GramAccumulator, Spectrum};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct Golden {
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    layer: usize,
    n_tokens: u64,
    uncentred: Reference,
    centred: Reference,
}

#[derive(Deserialize)]
struct Reference {
    eigenvalues: Vec<f64>,
    #[serde(rename = "var@0.9")]
    var_09: usize,
}

#[test]
fn gram_spectra_of_golden_hidden_states_match_numpy_svd() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden");
    let golden: Golden = serde_json::from_str(&std::fs::read_to_string(root.join("bert_tiny_spectra.json")).unwrap()).unwrap();
    let states = read_safetensors(&root.join("bert_tiny_golden.safetensors"), &Device::Cpu).unwrap().tensors;
    let mask: Vec<i64> = states["attention_mask"].flatten_all().unwrap().to_vec1().unwrap();
    let real: Vec<usize> = (0..mask.len()).filter(|&i| mask[i] == 1).collect();
    for layer in &golden.layers {
        let values: Vec<f32> = states[&format!("hidden_states.{}", layer.layer)].flatten_all().unwrap().to_vec1().unwrap();
        let all = ArrayView2::from_shape((mask.len(), 32), &values).unwrap();
        let rows = all.select(Axis(0), &real);
        // Two updates, to exercise streaming.
        let mut acc = GramAccumulator::new(32);
        acc.update(rows.slice(ndarray::s![..20, ..])).unwrap();
        acc.update(rows.slice(ndarray::s![20.., ..])).unwrap();
        assert_eq!(acc.n_tokens(), layer.n_tokens);
        for (centred, reference) in [(false, &layer.uncentred), (true, &layer.centred)] {
            let spectrum = Spectrum::from_gram(&acc, centred).unwrap();
            let ours = spectrum.eigenvalues();
            let scale = reference.eigenvalues[0];
            let worst = ours.iter().zip(&reference.eigenvalues).map(|(a, b)| (a - b).abs() / scale).fold(0.0, f64::max);
            assert!(
                worst < 1e-9,
                "layer {} centred={centred}: eigenvalues differ by {worst:e} of the largest; ours {:?}, numpy {:?}",
                layer.layer,
                &ours[..3],
                &reference.eigenvalues[..3]
            );
            assert_eq!(var_rank(&spectrum, 0.9), reference.var_09, "layer {} centred={centred}", layer.layer);
        }
    }
}
