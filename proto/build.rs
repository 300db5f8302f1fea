//! Compiles `stateward/pilot/v1/*.proto` with protox (pure Rust), so building needs no
//! system `protoc`.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let protos = ["stateward/pilot/v1/pilot.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
