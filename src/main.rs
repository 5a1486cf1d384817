use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ringfence::cli::Cli::parse().run().await
}
