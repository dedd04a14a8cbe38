const { ethers } = require("ethers");
const domain = { name: "pmargin", version: "1", chainId: 31337, verifyingContract: "0x5FbDB2315678afecb367f032d93F642f64180aa3" };
const types = { ExternalPositionAttestation: [
 {name:"account",type:"string"},{name:"protocol",type:"string"},{name:"kind",type:"string"},
 {name:"token0",type:"string"},{name:"token1",type:"string"},{name:"liquidity",type:"uint256"},
 {name:"priceLower",type:"uint256"},{name:"priceUpper",type:"uint256"},{name:"asset",type:"string"},
 {name:"amount",type:"uint256"},{name:"nonce",type:"uint64"},{name:"validUntil",type:"uint64"}]};
const lp = { account:"lp-alice", protocol:"uniswap-v3", kind:"uniswap_v3_lp", token0:"ETH", token1:"USDC",
  liquidity:"10480000000000000000000", priceLower:"2500000000000000000000", priceUpper:"3600000000000000000000",
  asset:"", amount:"0", nonce:"7", validUntil:"1798761600"};
const dep = { account:"loop-bob", protocol:"aave-v3", kind:"lending_deposit", token0:"", token1:"",
  liquidity:"0", priceLower:"0", priceUpper:"0", asset:"ETH", amount:"100000000000000000000", nonce:"8", validUntil:"1798761600"};
const w = new ethers.Wallet("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80");
(async () => {
 console.log("address", w.address);
 console.log("typehash", ethers.id("ExternalPositionAttestation(string account,string protocol,string kind,string token0,string token1,uint256 liquidity,uint256 priceLower,uint256 priceUpper,string asset,uint256 amount,uint64 nonce,uint64 validUntil)"));
 console.log("domainsep", ethers.TypedDataEncoder.hashDomain(domain));
 for (const m of [lp, dep]) {
  console.log("structhash", ethers.TypedDataEncoder.hashStruct("ExternalPositionAttestation", types, m));
  console.log("digest", ethers.TypedDataEncoder.hash(domain, types, m));
  console.log("sig", await w.signTypedData(domain, types, m));
 }
 const st = { SeizeInstruction: [{name:"account",type:"bytes32"},{name:"protocol",type:"bytes32"},{name:"position",type:"bytes32"},{name:"amount",type:"uint256"},{name:"receiver",type:"bytes32"},{name:"liquidationId",type:"uint64"},{name:"paramsVersion",type:"uint64"},{name:"nonce",type:"uint64"},{name:"deadline",type:"uint64"}]};
 const seize = { account: ethers.id("loop-bob"), protocol: ethers.id("aave-v3"), position: ethers.id("lending_deposit:ETH"), amount:"25000000000000000000", receiver: ethers.id("liquidator"), liquidationId:"42", paramsVersion:"3", nonce:"44040192", deadline:"1718003600"};
 console.log("seize typehash", ethers.id("SeizeInstruction(bytes32 account,bytes32 protocol,bytes32 position,uint256 amount,bytes32 receiver,uint64 liquidationId,uint64 paramsVersion,uint64 nonce,uint64 deadline)"));
 console.log("seize digest", ethers.TypedDataEncoder.hash(domain, st, seize));
 console.log("seize sig", await w.signTypedData(domain, st, seize));
 console.log("lp position id", ethers.id("uniswap_v3_lp:ETH:USDC:2500:3600"));
})();
