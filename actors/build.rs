// `sqlx::migrate!` embeds the migration files at compile time but does not
// tell cargo about them: without this a new migration would not be seen
// until some source file changed.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
