//! Prints the LoopService CustomResourceDefinition, generated from the Rust types.

fn main() {
    match loopservice_operator::crdgen_yaml() {
        Ok(yaml) => print!("{yaml}"),
        Err(e) => {
            eprintln!("crdgen: {e}");
            std::process::exit(1);
        }
    }
}
