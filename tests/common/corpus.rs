//! A small corpus with one query per document, for tests that compare
//! search results before and after rebuilding an index.

use serde_json::Value;

use super::TestApp;

pub const DOCUMENTS: &[(&str, &str)] = &[
    (
        "tides.txt",
        "Tides rise and fall twice a day because the moon's gravity pulls the oceans. Spring tides \
         come when the sun and the moon line up; neap tides when they stand at right angles.",
    ),
    (
        "bees.md",
        "# Honey bees\n\nWorker bees dance to tell the hive where flowers are. The waggle dance \
         encodes the direction and the distance of the nectar from the hive.",
    ),
    (
        "volcanoes.txt",
        "Volcanoes erupt when magma rises through the crust. Basalt lava flows far and fast, while \
         sticky rhyolite magma traps gas and explodes.",
    ),
    (
        "compilers.txt",
        "A compiler parses source code into a syntax tree, checks its types, and lowers it to \
         machine code. Register allocation maps variables onto the processor's registers.",
    ),
];

pub const QUERIES: &[&str] = &[
    "why are there two tides a day",
    "waggle dance of worker bees",
    "explosive rhyolite eruptions",
    "register allocation in a compiler",
];

/// The answer to every query, in order.
pub async fn searches(app: &TestApp, key: &str, kb: &str) -> Vec<Value> {
    let mut results = Vec::new();
    for query in QUERIES {
        let (status, body) = app.search(key, kb, query, 5).await;
        assert_eq!(status, 200, "search {query:?}: {body}");
        results.push(body);
    }
    results
}
